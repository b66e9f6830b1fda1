//! A hostile upstream's answers (issue 14 §2): for each query, one misbehaviour chosen by a
//! seeded PRNG, so a failing run can be replayed with its seed.
//!
//! Owns: what [`Fault::Hostile`](super::Fault::Hostile) sends for one query, as [`Step`]s the
//! test upstream's writer carries out, and a tally of what it chose. Pure: no I/O, no clock.
//!
//! What it never sends: a *lie*, i.e. a well-formed answer with the query's ID and question
//! whose data differs from the table's. No resolver can tell a lie from the truth without
//! DNSSEC; the point here is every *other* kind of hostile byte. Bit flips that would make a
//! lie are therefore drawn again ([`is_lie`]). Poisoning tries (data for other names,
//! under another question or next to the right answer) are not lies in that sense: a
//! resolver must not let them reach a client or its cache.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::dns;

/// The A record a poisoning try claims (documentation range: data only, never a destination).
pub const POISON_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
/// The AAAA record a poisoning try claims (documentation range: data only).
pub const POISON_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0x66);

/// What the hostile upstream does with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The right answer under another message ID.
    WrongId,
    /// The query's ID, another question (a name other clients ask) with a poisoned record.
    OtherQuestion,
    /// The right answer plus poisoned records for other names (answer, authority, additional).
    ExtraRecords,
    /// Random octets (sometimes behind the query's ID and a response header).
    RandomBytes,
    /// The right answer cut short (as a shorter frame, or a frame whose prefix overstates
    /// it), or its header alone with no question and any RCODE.
    Truncated,
    /// The query's ID and a name made of compression pointers that loop.
    CompressionLoop,
    /// The right answer with section counts far above what it holds.
    AbsurdCounts,
    /// A 65 535-octet message: padded right answer, right answer plus junk, or random.
    Huge,
    /// A frame of length zero (sometimes followed by the right answer).
    ZeroFrame,
    /// The right answer, then more frames: duplicates, junk, answers to other questions.
    ExtraFrames,
    /// The right answer with a few bits flipped (never into a lie).
    BitFlips,
    /// The right answer with TC set (answers kept or dropped).
    Truncation,
    /// No answer at all.
    Stall,
    /// TLS close_notify and FIN, or RST, instead of an answer.
    Close,
    /// The right answer.
    Right,
}

/// Every action with its weight out of [`TOTAL_WEIGHT`].
const MIX: [(Action, u32); 15] = [
    (Action::WrongId, 6),
    (Action::OtherQuestion, 8),
    (Action::ExtraRecords, 8),
    (Action::RandomBytes, 6),
    (Action::Truncated, 6),
    (Action::CompressionLoop, 6),
    (Action::AbsurdCounts, 6),
    (Action::Huge, 4),
    (Action::ZeroFrame, 5),
    (Action::ExtraFrames, 6),
    (Action::BitFlips, 10),
    (Action::Truncation, 5),
    (Action::Stall, 3),
    (Action::Close, 3),
    (Action::Right, 18),
];
const TOTAL_WEIGHT: u32 = {
    let mut sum = 0;
    let mut i = 0;
    while i < MIX.len() {
        sum += MIX[i].1;
        i += 1;
    }
    sum
};

/// One thing the upstream's writer does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A message with its 2-octet length prefix (RFC 7766 §8).
    Frame(Vec<u8>),
    /// Octets as they are, no prefix (a prefix that lies about what follows).
    Raw(Vec<u8>),
    /// close_notify + FIN; nothing more is answered on this connection.
    Close,
    /// RST; nothing more is answered on this connection.
    Reset,
}

/// splitmix64: tiny, seedable, good enough to pick misbehaviours.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n ≥ 1).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct State {
    rng: Rng,
    tally: Vec<(Action, usize)>,
}

/// The generator: one per test, shared by every connection of the upstreams that use it.
pub struct Hostile {
    seed: u64,
    /// Names (lower case, fully qualified) and types other clients ask: poisoning targets.
    targets: Vec<(String, RecordType)>,
    /// Always this action instead of a draw (focused tests).
    only: Option<Action>,
    state: Mutex<State>,
}

impl Hostile {
    /// A generator drawing from `seed`, poisoning `targets` (names as asked, any case).
    pub fn new(seed: u64, targets: &[(&str, RecordType)]) -> Self {
        let targets = targets
            .iter()
            .map(|(n, t)| {
                let n = n.to_ascii_lowercase();
                (if n.ends_with('.') { n } else { format!("{n}.") }, *t)
            })
            .collect::<Vec<_>>();
        assert!(!targets.is_empty(), "a hostile upstream needs names to poison");
        let tally = MIX.iter().map(|(a, _)| (*a, 0)).collect();
        Hostile { seed, targets, only: None, state: Mutex::new(State { rng: Rng(seed), tally }) }
    }

    /// The same generator, always choosing `action` (its details still drawn from the seed).
    pub fn only(mut self, action: Action) -> Self {
        self.only = Some(action);
        self
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How often each action was chosen so far.
    pub fn tally(&self) -> Vec<(Action, usize)> {
        self.state.lock().unwrap().tally.clone()
    }

    /// What to send for `query` (a frame as read). Draws under one lock, so the sequence of
    /// choices is the seed's whatever the order connections ask in.
    pub fn respond(&self, query: &[u8]) -> (Action, Vec<Step>) {
        let mut st = self.state.lock().unwrap();
        let mut pick = st.rng.below(TOTAL_WEIGHT as usize) as u32;
        let mut action = Action::Right;
        for (a, w) in MIX {
            if pick < w {
                action = a;
                break;
            }
            pick -= w;
        }
        let action = self.only.unwrap_or(action);
        if let Some(slot) = st.tally.iter_mut().find(|(a, _)| *a == action) {
            slot.1 += 1;
        }
        let steps = self.steps(action, query, &mut st.rng);
        (action, steps)
    }

    fn steps(&self, action: Action, query: &[u8], rng: &mut Rng) -> Vec<Step> {
        use Step::Frame;
        let Some(truth) = dns::respond(query) else {
            return vec![]; // not even an ID: stay silent, as the honest upstream does
        };
        let id = [truth[0], truth[1]];
        let asked = Message::from_vec(query).ok().and_then(|q| q.queries.first().cloned());
        match action {
            Action::Right => vec![Frame(truth)],
            Action::WrongId => {
                let mut m = truth;
                let flip = (1 + rng.below(0xffff)) as u16;
                let wrong = u16::from_be_bytes(id) ^ flip;
                m[..2].copy_from_slice(&wrong.to_be_bytes());
                vec![Frame(m)]
            }
            Action::OtherQuestion => vec![Frame(self.poison_for_other(id, asked.as_ref(), rng))],
            Action::ExtraRecords => vec![Frame(self.with_extra_records(&truth, asked.as_ref(), rng))],
            Action::RandomBytes => {
                let n = rng.below(600);
                let mut m = rng.bytes(n);
                if n >= 12 && rng.chance(2) {
                    m[..2].copy_from_slice(&id);
                    m[2] |= 0x80; // QR
                    m[4..6].copy_from_slice(&[0, 1]);
                }
                vec![Frame(m)]
            }
            Action::Truncated => {
                let cut = rng.below(truth.len());
                if rng.chance(5) {
                    // The header alone, QDCOUNT 0 (matched by ID alone when its RCODE is
                    // an error, RFC 7858 §3.3), with any RCODE.
                    let mut header = truth[..12].to_vec();
                    header[3] = (header[3] & 0xf0) | rng.below(16) as u8;
                    header[4..].fill(0);
                    vec![Frame(header)]
                } else if rng.chance(4) {
                    // The prefix announces the whole message; only part of it follows.
                    let mut raw = (truth.len() as u16).to_be_bytes().to_vec();
                    raw.extend_from_slice(&truth[..cut]);
                    vec![Step::Raw(raw)]
                } else {
                    vec![Frame(truth[..cut].to_vec())]
                }
            }
            Action::CompressionLoop => vec![Frame(compression_loop(&truth, rng))],
            Action::AbsurdCounts => {
                let mut m = truth;
                let field = 4 + 2 * rng.below(4);
                let count = if rng.chance(2) { 0xffff } else { 0x0100 + rng.below(0xff00) as u16 };
                m[field..field + 2].copy_from_slice(&count.to_be_bytes());
                vec![Frame(m)]
            }
            Action::Huge => vec![Frame(huge(&truth, query, rng))],
            Action::ZeroFrame => {
                let mut steps = vec![Frame(Vec::new())];
                if rng.chance(2) {
                    steps.push(Frame(truth));
                }
                steps
            }
            Action::ExtraFrames => {
                let mut steps = vec![Frame(truth.clone())];
                for _ in 0..1 + rng.below(4) {
                    steps.push(Frame(match rng.below(3) {
                        0 => truth.clone(),
                        1 => {
                            let n = rng.below(100);
                            rng.bytes(n)
                        }
                        // The query's ID, now answered: no query in flight has it.
                        _ => self.poison_for_other(id, asked.as_ref(), rng),
                    }));
                }
                steps
            }
            Action::BitFlips => vec![Frame(bit_flips(query, &truth, rng))],
            Action::Truncation => {
                let mut m = Message::from_vec(&truth).expect("own answer parses");
                m.metadata.truncation = true;
                if rng.chance(2) {
                    m.answers.clear();
                    m.authorities.clear();
                }
                vec![Frame(m.to_vec().expect("encode"))]
            }
            Action::Stall => vec![],
            Action::Close => vec![if rng.chance(2) { Step::Close } else { Step::Reset }],
        }
    }

    /// A target other than `asked` (same name and type would make a lie, not a poisoning
    /// try); `None` when `asked` is the only target.
    fn other_target(&self, asked: Option<&Query>, rng: &mut Rng) -> Option<&(String, RecordType)> {
        let is_asked = |(name, rtype): &(String, RecordType)| {
            asked.is_some_and(|q| q.query_type() == *rtype && q.name().to_lowercase().to_ascii() == *name)
        };
        let others: Vec<_> = self.targets.iter().filter(|t| !is_asked(t)).collect();
        (!others.is_empty()).then(|| others[rng.below(others.len())])
    }

    /// A response with ID `id` to a question other clients ask, claiming a poisoned address.
    fn poison_for_other(&self, id: [u8; 2], asked: Option<&Query>, rng: &mut Rng) -> Vec<u8> {
        let Some((name, rtype)) = self.other_target(asked, rng) else {
            return Vec::new();
        };
        let name = random_case(name, rng);
        let mut m =
            Message::new(u16::from_be_bytes(id), MessageType::Response, hickory_proto::op::OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(Query::query(name.clone(), *rtype));
        m.add_answer(poison_record(name, *rtype));
        m.to_vec().expect("encode poison")
    }

    /// `truth` plus poisoned records for other names, in any section.
    fn with_extra_records(&self, truth: &[u8], asked: Option<&Query>, rng: &mut Rng) -> Vec<u8> {
        let mut m = Message::from_vec(truth).expect("own answer parses");
        for _ in 0..1 + rng.below(3) {
            let Some((name, rtype)) = self.other_target(asked, rng) else { break };
            let rtype =
                if matches!(rtype, RecordType::A | RecordType::AAAA) { *rtype } else { RecordType::A };
            if asked.is_some_and(|q| q.query_type() == rtype && q.name().to_lowercase().to_ascii() == *name) {
                continue; // that would be a lie
            }
            let record = poison_record(random_case(name, rng), rtype);
            match rng.below(3) {
                0 => m.answers.push(record),
                1 => m.authorities.push(record),
                _ => m.additionals.push(record),
            }
        }
        m.to_vec().expect("encode extra records")
    }
}

fn random_case(name: &str, rng: &mut Rng) -> Name {
    let mixed: String =
        name.chars().map(|c| if rng.chance(2) { c.to_ascii_uppercase() } else { c }).collect();
    Name::from_ascii(mixed).expect("target name")
}

fn poison_record(name: Name, rtype: RecordType) -> Record {
    let data = match rtype {
        RecordType::AAAA => RData::AAAA(AAAA(POISON_V6)),
        _ => RData::A(A(POISON_V4)),
    };
    // Under a question of another type (e.g. TXT) an A record: still a poisoning try.
    Record::from_rdata(name, 86_400, data)
}

/// The answer's header, then a question whose name is compression pointers that loop
/// (to itself, or two pointing at each other), or the right question and an answer
/// record whose owner loops.
fn compression_loop(truth: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = truth[..12].to_vec();
    m[6..12].fill(0);
    match rng.below(3) {
        0 => {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // QNAME → itself
        }
        1 => {
            // a label, then a pointer back to the start of the name
            m.extend_from_slice(&[1, b'x', 0xc0, 12, 0, 1, 0, 1]);
        }
        _ => {
            // The right question (copied), then an answer whose owner points at itself.
            let q_end = 12 + question_len(truth).unwrap_or(0);
            m.truncate(12);
            m.extend_from_slice(&truth[12..q_end]);
            m[4..6].copy_from_slice(&[0, 1]);
            m[6..8].copy_from_slice(&[0, 1]); // ANCOUNT 1
            let at = m.len() as u16;
            let ptr = 0xc000 | at;
            m.extend_from_slice(&ptr.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, 1]);
        }
    }
    m
}

/// Octets of the first question of `wire` (name, type, class), if uncompressed.
fn question_len(wire: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*wire.get(at)?);
        if len == 0 || len > 63 {
            break;
        }
        at += 1 + len;
    }
    Some(at + 1 + 4 - 12)
}

/// Exactly 65 535 octets: the right answer padded to it (legitimate, RFC 7830), the right
/// answer followed by junk, or the query's ID and random octets.
fn huge(truth: &[u8], query: &[u8], rng: &mut Rng) -> Vec<u8> {
    const MAX: usize = 65_535;
    match rng.below(3) {
        0 => {
            let q = Message::from_vec(query).expect("query parses (respond answered it)");
            if q.edns.is_some() {
                let mut m = Message::from_vec(truth).expect("own answer parses");
                let mut e = m.edns.clone().expect("the answer mirrors the query's OPT");
                e.options_mut().remove(hickory_proto::rr::rdata::opt::EdnsCode::Padding);
                m.edns = Some(e.clone());
                let base = m.to_vec().expect("encode").len();
                // 4 octets of option header, then the padding (RFC 7830 §3).
                let fill = MAX - base - 4;
                e.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    dns::EDNS_PADDING,
                    vec![0; fill],
                ));
                m.edns = Some(e);
                let wire = m.to_vec().expect("encode padded");
                if wire.len() == MAX {
                    return wire;
                }
            }
            let mut m = truth.to_vec();
            m.resize(MAX, 0);
            m
        }
        1 => {
            let mut m = truth.to_vec();
            let junk = rng.bytes(MAX - m.len());
            m.extend_from_slice(&junk);
            m
        }
        _ => {
            let mut m = rng.bytes(MAX);
            m[..2].copy_from_slice(&truth[..2]);
            m
        }
    }
}

/// `truth` with 1..8 bits flipped, drawn again (up to 16 times) while the result would be a
/// lie; after that, the flips land in the ID only.
fn bit_flips(query: &[u8], truth: &[u8], rng: &mut Rng) -> Vec<u8> {
    for _ in 0..16 {
        let mut m = truth.to_vec();
        for _ in 0..1 + rng.below(8) {
            let bit = rng.below(m.len() * 8);
            m[bit / 8] ^= 1 << (bit % 8);
        }
        if m != truth && !is_lie(query, truth, &m) {
            return m;
        }
    }
    let mut m = truth.to_vec();
    m[0] ^= 0x80;
    m
}

/// Whether a resolver would take `candidate` as the answer to `query` (same ID, a
/// response, one question equal to the query's ignoring case) and its content differs
/// from `truth` in something beyond TTLs, name case, header flags and the OPT.
pub fn is_lie(query: &[u8], truth: &[u8], candidate: &[u8]) -> bool {
    let truth = Message::from_vec(truth).expect("own answer parses");
    // Both readings count: hickory's of the whole message, and stubborn's own, which
    // leaves a last OPT out of the parse (so a flip inside the OPT can make hickory
    // refuse a message stubborn takes).
    let whole = Message::from_vec(candidate).ok();
    let ours = stubborn::message::parse_upstream(candidate).ok().map(|(m, _)| m);
    [whole, ours]
        .into_iter()
        .flatten()
        .filter_map(|m| accepted_as(query, m))
        .any(|taken| content(&taken) != content(&truth))
}

/// `m`, if a resolver would take it as the answer to `query`.
pub fn accepted_as(query: &[u8], m: Message) -> Option<Message> {
    let q = Message::from_vec(query).ok()?;
    // hickory compares names ignoring ASCII case, as the connection's matcher does.
    let same_question = m.queries.len() == 1
        && q.queries.len() == 1
        && m.queries[0].name() == q.queries[0].name()
        && m.queries[0].query_type() == q.queries[0].query_type()
        && m.queries[0].query_class() == q.queries[0].query_class();
    (m.metadata.id == q.metadata.id && m.metadata.message_type == MessageType::Response && same_question)
        .then_some(m)
}

/// One record as compared: lower-case owner, type, RDATA.
type RecordKey = (String, RecordType, String);

/// What an answer says, ignoring TTLs, name case, flags and the OPT: rcode and records.
fn content(m: &Message) -> (ResponseCode, Vec<Vec<RecordKey>>) {
    let section = |rs: &[Record]| {
        let mut v: Vec<_> = rs
            .iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .map(|r| (r.name.to_lowercase().to_ascii(), r.record_type(), format!("{:?}", r.data)))
            .collect();
        v.sort();
        v
    };
    (m.metadata.response_code, vec![section(&m.answers), section(&m.authorities), section(&m.additionals)])
}

/// A cheap handle for [`Fault::Hostile`](super::Fault::Hostile): equal only to itself.
#[derive(Clone)]
pub struct HostileFault(pub Arc<Hostile>);

impl PartialEq for HostileFault {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for HostileFault {}

impl std::fmt::Debug for HostileFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hostile(seed {:#x})", self.0.seed)
    }
}
