//! Upstream authentication end to end: SPKI pins, certificate pins, CA + hostname, and the
//! failures that must refuse the connection (RFC 7858 §4.2, RFC 8310).

mod common;
mod support;

use common::{
    ChainKind, Fault, TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    udp_query, unrelated_key_pin,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use support::{Auth, Stub, UDP_WAIT, upstream_block};

async fn ask(stub: &Stub) -> hickory_proto::op::Message {
    parse(&udp_query(stub.addr, &query(77, "a.test", RecordType::A), UDP_WAIT).await.unwrap())
}

async fn stub_with(up: &TestUpstream, auth: Auth<'_>) -> Stub {
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", up, auth, &dir);
    Stub::start("", &block, dir).await
}

fn assert_answered(m: &hickory_proto::op::Message) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer_strings(m), vec!["192.0.2.1".to_string()]);
}

fn assert_refused(m: &hickory_proto::op::Message, up: &TestUpstream) {
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    assert_eq!(up.queries_received(), 0, "no query may reach an unauthenticated server");
}

#[tokio::test]
async fn leaf_key_pin_matches() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    assert_answered(&ask(&stub_with(&up, Auth::Pin(&up.leaf_key_pin)).await).await);
}

#[tokio::test]
async fn pin_mismatch_is_refused_and_nothing_reaches_the_client() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let pin = unrelated_key_pin();
    let stub = stub_with(&up, Auth::Pin(&pin)).await;
    assert_refused(&ask(&stub).await, &up);
}

#[tokio::test]
async fn cert_fp_pin_matches() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    assert_answered(&ask(&stub_with(&up, Auth::Pin(&up.leaf_cert_pin)).await).await);
}

#[tokio::test]
async fn intermediate_key_pin_with_tls_name_matches_and_root_pin_does_not_when_root_is_not_presented() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    let intermediate = up.intermediate_key_pin.clone().unwrap();
    let auth = Auth::PinWithName { pin: &intermediate, tls_name: "dns.test" };
    assert_answered(&ask(&stub_with(&up, auth).await).await);
    // The server presents leaf + intermediate only: a pin on the root's key has nothing
    // presented to match.
    let root = up.root_key_pin.clone().unwrap();
    let m = ask(&stub_with(&up, Auth::PinWithName { pin: &root, tls_name: "dns.test" }).await).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(up.queries_received(), 1, "only the intermediate-pinned stub's query arrived");
}

/// The EDE (RFC 8914) extra text of an answer.
fn ede_text(m: &Message) -> Option<String> {
    match m.edns.as_ref()?.options().get(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => {
            Some(String::from_utf8_lossy(&data[2..]).into_owned())
        }
        _ => None,
    }
}

#[tokio::test]
async fn an_intermediate_pin_refuses_a_leaf_for_another_name_and_the_ede_says_why() {
    // The server holds a genuine leaf from the pinned intermediate, but for another name:
    // what anyone gets from the same CA for a domain of their own.
    let up = TestUpstream::start(UpstreamOptions {
        chain: ChainKind::WithIntermediate,
        tls_name: "attacker.test".into(),
        ..Default::default()
    })
    .await;
    let intermediate = up.intermediate_key_pin.clone().unwrap();
    let m = ask(&stub_with(&up, Auth::PinWithName { pin: &intermediate, tls_name: "dns.test" }).await).await;
    assert_refused(&m, &up);
    let text = ede_text(&m).expect("an EDE on the SERVFAIL");
    assert!(text.contains("ca-pin-refused (leaf not valid for tls_name)"), "{text}");
    // For the name the leaf carries, the same pin answers.
    let auth = Auth::PinWithName { pin: &intermediate, tls_name: "attacker.test" };
    assert_answered(&ask(&stub_with(&up, auth).await).await);
}

#[tokio::test]
async fn an_intermediate_pin_without_tls_name_is_refused_and_the_ede_says_why() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    let intermediate = up.intermediate_key_pin.clone().unwrap();
    let m = ask(&stub_with(&up, Auth::Pin(&intermediate)).await).await;
    assert_refused(&m, &up);
    let text = ede_text(&m).expect("an EDE on the SERVFAIL");
    assert!(text.contains("ca-pin-refused (CA pin without tls_name)"), "{text}");
    // A leaf pin needs no name, whatever the leaf's names.
    assert_answered(&ask(&stub_with(&up, Auth::Pin(&up.leaf_key_pin)).await).await);
}

#[tokio::test]
async fn a_server_with_the_pinned_certificate_but_not_its_key_is_refused() {
    let up = TestUpstream::start(UpstreamOptions { fault: Fault::WrongKey, ..Default::default() }).await;
    assert_refused(&ask(&stub_with(&up, Auth::Pin(&up.leaf_key_pin)).await).await, &up);
}

#[tokio::test]
async fn ca_and_hostname_validation_passes_for_the_right_name() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    assert_answered(&ask(&stub_with(&up, Auth::Ca { tls_name: "dns.test" }).await).await);
}

#[tokio::test]
async fn ca_validation_fails_for_a_wrong_name() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    assert_refused(&ask(&stub_with(&up, Auth::Ca { tls_name: "other.test" }).await).await, &up);
}
