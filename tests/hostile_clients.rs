//! Hostile local clients found by the flood (tests/netns/flood.sh, issue 14): what one of
//! their queries must never make stubborn do upstream.

mod common;
mod support;

use common::{
    TestUpstream, UpstreamOptions,
    dns::{parse, query},
    udp_query,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Stub, UDP_WAIT};

/// A query for a meta-TYPE (OPT, TKEY, TSIG, or one of 128..=248) is not a question any
/// upstream can answer (RFC 6891 §6.1.1: OPT is never forwarded; RFC 6895 §3.1), and unbound
/// answers it FORMERR *and closes the DoT connection*, dropping every other client's queries
/// in flight on it. Found by the flood: each such datagram from one local client cost the
/// shared upstream connection (up to 191 queries in flight unanswered). stubborn must
/// answer it itself and never forward it.
#[tokio::test]
async fn meta_type_queries_are_answered_locally_and_never_forwarded() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    for (id, rtype) in [
        (1, RecordType::OPT),
        (2, RecordType::TSIG),
        (3, RecordType::Unknown(249)), // TKEY
        (4, RecordType::Unknown(128)),
        (5, RecordType::Unknown(248)),
    ] {
        let answer = udp_query(stub.addr, &query(id, "a.test", rtype), UDP_WAIT).await.unwrap();
        let m = parse(&answer);
        assert_eq!(m.metadata.id, id);
        assert!(
            matches!(m.metadata.response_code, ResponseCode::FormErr | ResponseCode::NotImp),
            "{rtype:?}: {:?}",
            m.metadata.response_code
        );
    }
    assert_eq!(up.queries_received(), 0, "a meta-TYPE query was forwarded upstream");
}
