//! Wire helpers of a DNS stream: RFC 7766 length-prefixed framing, and matching an
//! answer to its query by the question's octets (RFC 7858 §3.3), with no parse and no
//! allocation per message.

use bytes::{Buf, BytesMut};

/// The fixed DNS header (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;

/// Appends `message` to `out` with its 2-octet length prefix (RFC 7766 §8).
pub(crate) fn push_frame(out: &mut Vec<u8>, message: &[u8]) {
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
}

/// Takes one length-prefixed message off the front of `buf`, if a whole one is there.
pub(crate) fn take_frame(buf: &mut BytesMut) -> Option<BytesMut> {
    if buf.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if buf.len() < 2 + len {
        buf.reserve(2 + len - buf.len());
        return None;
    }
    buf.advance(2);
    Some(buf.split_to(len))
}

/// The octets of the single question of a DNS message (name, type, class), if it has
/// exactly one and its name is uncompressed. The first name of a message has nothing
/// before it to point at, so a well-formed question is never compressed.
pub(crate) fn question_bytes(wire: &[u8]) -> Option<&[u8]> {
    if wire.len() < HEADER_LEN || wire[4..6] != [0, 1] {
        return None;
    }
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*wire.get(at)?);
        if len == 0 {
            break;
        }
        // 0x40 and above: a pointer or an extended label type.
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    // The root label, then QTYPE and QCLASS.
    let end = at + 1 + 4;
    (end <= wire.len() && end - HEADER_LEN <= 255 + 4).then(|| &wire[HEADER_LEN..end])
}

/// The RCODE of an error answer that carries no question (QR set, QDCOUNT 0, RCODE not
/// NOERROR): a server that could not read a query (FORMERR), will not answer it
/// (REFUSED) or does not implement it (NOTIMP) may send the header alone. RFC 7858 §3.3
/// (and RFC 7766 §7) match by ID, and by the question only *if* the answer has one, so
/// such an answer belongs to the query in flight under its ID.
pub(crate) fn questionless_error(wire: &[u8]) -> Option<u8> {
    if wire.len() < HEADER_LEN || wire[2] & 0x80 == 0 || wire[4..6] != [0, 0] {
        return None;
    }
    let rcode = wire[3] & 0x0f;
    (rcode != 0).then_some(rcode)
}

/// RFC 7766 §7 matching: the same name ignoring ASCII case (RFC 4343), type and class.
/// Length octets are below 64, so case folding never changes them: equal octets up to
/// case mean the same labels.
pub(crate) fn same_question(a: &[u8], b: &[u8]) -> bool {
    let (Some(name_a), Some(name_b)) = (a.len().checked_sub(4), b.len().checked_sub(4)) else {
        return false;
    };
    name_a == name_b && a[..name_a].eq_ignore_ascii_case(&b[..name_b]) && a[name_a..] == b[name_b..]
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    fn wire(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 3, 1, 2]);
        assert!(take_frame(&mut buf).is_none());
        buf.extend_from_slice(&[3, 0, 1, 9]);
        assert_eq!(&take_frame(&mut buf).unwrap()[..], &[1, 2, 3]);
        assert_eq!(&take_frame(&mut buf).unwrap()[..], &[9]);
        assert!(take_frame(&mut buf).is_none());
    }

    #[test]
    fn pushed_frames_are_taken_back_whole() {
        let mut out = Vec::new();
        push_frame(&mut out, &[7, 7]);
        push_frame(&mut out, &[]);
        let mut buf = BytesMut::from(&out[..]);
        assert_eq!(&take_frame(&mut buf).unwrap()[..], &[7, 7]);
        assert!(take_frame(&mut buf).unwrap().is_empty());
    }

    #[test]
    fn questions_compare_case_insensitively_and_by_type() {
        let a = wire("Example.TEST.", RecordType::A);
        let b = wire("example.test.", RecordType::A);
        let c = wire("example.test.", RecordType::AAAA);
        let d = wire("example.tesu.", RecordType::A);
        let (qa, qb) = (question_bytes(&a).unwrap(), question_bytes(&b).unwrap());
        assert_eq!(qa.len(), "example.test.".len() + 1 + 4);
        assert!(same_question(qa, qb));
        assert!(!same_question(qa, question_bytes(&c).unwrap()));
        assert!(!same_question(qa, question_bytes(&d).unwrap()));
    }

    #[test]
    fn malformed_questions_are_refused_without_panicking() {
        let good = wire("a.test.", RecordType::A);
        for cut in 0..good.len() {
            assert!(question_bytes(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut two = good.clone();
        two[5] = 2;
        assert!(question_bytes(&two).is_none());
        let mut pointer = good.clone();
        pointer[12] = 0xc0;
        assert!(question_bytes(&pointer).is_none());
        assert!(!same_question(&[], &[1, 2]));
    }

    #[test]
    fn only_error_answers_without_a_question_match_by_id_alone() {
        // Header only: ID, QR + RD, RA + FORMERR, all counts 0.
        let formerr = [0x12, 0x34, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(questionless_error(&formerr), Some(1));
        let mut refused = formerr;
        refused[3] = 0x85;
        assert_eq!(questionless_error(&refused), Some(5));
        // NOERROR without a question answers nothing.
        let mut noerror = formerr;
        noerror[3] = 0x80;
        assert_eq!(questionless_error(&noerror), None);
        // A query (QR clear) is not an answer.
        let mut query = formerr;
        query[2] = 0x01;
        assert_eq!(questionless_error(&query), None);
        // An answer that has a question is matched by it, never by ID alone.
        let mut with_question = wire("a.test.", RecordType::A);
        with_question[2] |= 0x80;
        with_question[3] |= 0x01;
        assert_eq!(questionless_error(&with_question), None);
        assert_eq!(questionless_error(&formerr[..11]), None);
    }
}
