//! RFC 7766 §8 framing of an answer for a TCP client: a two-octet length, then the
//! message. A message longer than a frame can say (RFC 1035 §4.2.2) is never cut by a
//! wrapped length: it goes out truncated (TC, header and question), or, if it cannot
//! be read back, as a bare SERVFAIL header with its ID.

use hickory_proto::op::{Message, ResponseCode};

/// The longest message a TCP frame can carry: its length field is 16 bits.
pub const FRAME_MAX: usize = u16::MAX as usize;

/// Writes `wire` as one frame into `out` (cleared first).
pub fn frame(wire: Vec<u8>, out: &mut Vec<u8>) {
    let wire = if wire.len() > FRAME_MAX { shrink(wire) } else { wire };
    out.clear();
    // In range: shrink() never returns more than FRAME_MAX octets.
    out.extend_from_slice(&(wire.len() as u16).to_be_bytes());
    out.extend_from_slice(&wire);
}

/// An answer too long for a frame, made to fit: TC with the question (RFC 2181 §9), or a
/// SERVFAIL header when the message does not parse.
fn shrink(wire: Vec<u8>) -> Vec<u8> {
    let servfail = servfail_header(&wire);
    let fitted = Message::from_vec(&wire).ok().and_then(|mut msg| {
        msg.metadata.truncation = true;
        msg.truncate().to_vec().ok()
    });
    match fitted {
        Some(fitted) if !fitted.is_empty() && fitted.len() <= FRAME_MAX => fitted,
        _ => servfail,
    }
}

/// The first 12 octets of `wire` as a SERVFAIL response with no records (QR set, RCODE 2,
/// every count 0); ID, opcode, RD and RA kept.
fn servfail_header(wire: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 12];
    let n = wire.len().min(12);
    header[..n].copy_from_slice(&wire[..n]);
    header[2] = (header[2] | 0x80) & !0x06; // QR; AA and TC cleared
    header[3] = (header[3] & 0xf0) | ResponseCode::ServFail.low();
    header[4..].fill(0);
    header.to_vec()
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{MessageType, OpCode, Query},
        rr::{Name, RData, Record, RecordType, rdata::TXT},
    };

    use super::*;

    /// A well-formed answer of more than 65535 octets: 150 TXT records of 250 octets,
    /// encoded, then the answer section repeated (its names are pointers to the
    /// question, still valid) with ANCOUNT doubled.
    fn huge_answer() -> Vec<u8> {
        let name = Name::from_ascii("huge.test.").unwrap();
        let mut m = Message::new(0x5151, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(Query::query(name.clone(), RecordType::TXT));
        let question_end = m.to_vec().unwrap().len();
        for _ in 0..150 {
            m.add_answer(Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(vec!["y".repeat(250)]))));
        }
        let mut wire = m.to_vec().unwrap();
        let answers = wire[question_end..].to_vec();
        wire.extend_from_slice(&answers);
        wire[6..8].copy_from_slice(&300u16.to_be_bytes());
        assert!(wire.len() > FRAME_MAX);
        assert_eq!(Message::from_vec(&wire).unwrap().answers.len(), 300, "a valid message");
        wire
    }

    fn split(frame: &[u8]) -> (usize, &[u8]) {
        (usize::from(u16::from_be_bytes([frame[0], frame[1]])), &frame[2..])
    }

    #[test]
    fn an_answer_too_long_for_a_frame_goes_out_truncated() {
        let mut out = Vec::new();
        frame(huge_answer(), &mut out);
        let (len, body) = split(&out);
        assert_eq!(len, body.len(), "the length field says what follows");
        let msg = Message::from_vec(body).unwrap();
        assert_eq!(msg.metadata.id, 0x5151);
        assert!(msg.metadata.truncation);
        assert!(msg.answers.is_empty());
        assert_eq!(msg.queries[0].name().to_ascii(), "huge.test.");
    }

    #[test]
    fn an_unreadable_answer_too_long_for_a_frame_goes_out_as_servfail() {
        let mut wire = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        wire.resize(FRAME_MAX + 10, 0xff);
        let mut out = Vec::new();
        frame(wire, &mut out);
        let (len, body) = split(&out);
        assert_eq!((len, body.len()), (12, 12));
        let msg = Message::from_vec(body).unwrap();
        assert_eq!(msg.metadata.id, 0xabcd);
        assert_eq!(msg.metadata.message_type, MessageType::Response);
        assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
        assert!(msg.metadata.recursion_desired);
    }

    #[test]
    fn answers_that_fit_are_framed_unchanged() {
        let mut out = vec![9, 9, 9];
        frame(vec![1, 2, 3], &mut out);
        assert_eq!(out, [0, 3, 1, 2, 3]);
        let mut out = Vec::new();
        frame(vec![7; FRAME_MAX], &mut out);
        assert_eq!(split(&out).0, FRAME_MAX);
    }
}
