//! Tests of the test harness itself (tests/common), with a tiny tokio-rustls client, not
//! stubborn: if these fail, every end-to-end test built on the harness is suspect.
//! All traffic stays on loopback.

mod common;

use std::time::Duration;

use common::dns::{self, QueryOptions, build_query, parse, query};
use common::*;
use hickory_proto::op::{MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

/// How long to wait to conclude that nothing comes (kept short: ≤ 500 ms).
const SILENCE: Duration = Duration::from_millis(400);
/// How long an answer that must come may take (generous: the machine is shared and busy).
const ANSWER: Duration = Duration::from_secs(5);

async fn honest() -> TestUpstream {
    TestUpstream::start(UpstreamOptions::default()).await
}

async fn connect(up: &TestUpstream) -> DotClient {
    DotClient::connect(up.addr, &up.tls_name, &up.ca_pem).await.expect("connect")
}

#[tokio::test]
async fn answers_a_aaaa_txt_and_mirrors_the_query() {
    let up = honest().await;
    let mut c = connect(&up).await;

    let resp = parse(&c.query(&query(0x1234, "A.TeSt", RecordType::A)).await.unwrap());
    assert_eq!(resp.metadata.id, 0x1234);
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    assert!(resp.metadata.recursion_desired && resp.metadata.recursion_available);
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(resp.queries.len(), 1);
    // Question case preserved exactly as sent (0x20-style clients depend on this).
    assert_eq!(resp.queries[0].name().to_ascii(), "A.TeSt.");
    assert_eq!(resp.answers[0].name.to_ascii(), "A.TeSt.");
    assert_eq!(dns::answer_strings(&resp), ["192.0.2.1"]);
    assert_eq!(resp.answers[0].ttl, 300);

    let resp = parse(&c.query(&query(2, "aaaa.test", RecordType::AAAA)).await.unwrap());
    assert_eq!(dns::answer_strings(&resp), ["2001:db8::1"]);
    let resp = parse(&c.query(&query(3, "txt.test", RecordType::TXT)).await.unwrap());
    assert_eq!(dns::answer_strings(&resp), ["hello"]);
    let resp = parse(&c.query(&query(4, "multi.test", RecordType::A)).await.unwrap());
    assert_eq!(dns::answer_strings(&resp), ["192.0.2.10", "192.0.2.11", "192.0.2.12"]);

    // RD is copied, not forced.
    let no_rd = QueryOptions { recursion_desired: false, ..Default::default() };
    let resp = parse(&c.query(&build_query(5, "a.test", RecordType::A, &no_rd)).await.unwrap());
    assert!(!resp.metadata.recursion_desired);

    assert_eq!(up.queries_received(), 5);
    assert_eq!(up.answers_sent(), 5);
    assert_eq!(up.connections_accepted(), 1);
    assert_eq!(up.handshakes_completed(), 1);
    assert_eq!(up.server_names_seen(), [Some("dns.test".to_string())]);
    let ids: Vec<u16> = up.received().iter().map(|w| dns::wire_id(w)).collect();
    assert_eq!(ids, [0x1234, 2, 3, 4, 5]);
}

#[tokio::test]
async fn edns_padding_and_do_bit() {
    let up = honest().await;
    let mut c = connect(&up).await;

    let wire = c.query(&query(1, "a.test", RecordType::A)).await.unwrap();
    let resp = parse(&wire);
    let edns = resp.edns.as_ref().expect("OPT mirrored");
    assert_eq!(edns.max_payload(), 1232);
    assert!(!edns.flags().dnssec_ok);
    assert!(dns::padding_of(&resp).is_some(), "reply carries a padding option");
    assert_eq!(wire.len() % dns::RESPONSE_PADDING_BLOCK, 0, "padded to the block");

    let do_q = QueryOptions { dnssec_ok: true, ..Default::default() };
    let resp = parse(&c.query(&build_query(2, "a.test", RecordType::A, &do_q)).await.unwrap());
    assert!(resp.edns.as_ref().unwrap().flags().dnssec_ok);

    let plain = QueryOptions { edns: false, ..Default::default() };
    let resp = parse(&c.query(&build_query(3, "a.test", RecordType::A, &plain)).await.unwrap());
    assert!(resp.edns.is_none(), "no OPT in, no OPT out");
}

#[tokio::test]
async fn negative_answers_carry_the_soa() {
    let up = honest().await;
    let mut c = connect(&up).await;

    let resp = parse(&c.query(&query(1, "nope.test", RecordType::A)).await.unwrap());
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(resp.answers.is_empty());
    assert_eq!(resp.authorities.len(), 1);
    let soa = &resp.authorities[0];
    assert_eq!(soa.ttl, 300);
    match &soa.data {
        RData::SOA(s) => assert_eq!(s.minimum, 60),
        other => panic!("authority is not an SOA: {other:?}"),
    }

    // NODATA: known name, other type.
    let resp = parse(&c.query(&query(2, "a.test", RecordType::AAAA)).await.unwrap());
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert!(resp.answers.is_empty());
    assert!(matches!(resp.authorities[0].data, RData::SOA(_)));

    let resp = parse(&c.query(&query(3, "servfail.test", RecordType::A)).await.unwrap());
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);

    // Garbage with a header-sized prefix gets FORMERR with the same ID.
    let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 5]);
    let resp = c.query(&junk).await.unwrap();
    assert_eq!(dns::wire_id(&resp), 0xabcd);
    assert_eq!(resp[3] & 0x0f, 1, "FORMERR");
}

#[tokio::test]
async fn big_answer_is_larger_than_1232_over_tls() {
    let up = honest().await;
    let mut c = connect(&up).await;
    let wire = c.query(&query(7, "big.test", RecordType::TXT)).await.unwrap();
    assert!(wire.len() > 1232, "big.test is {} bytes", wire.len());
    let resp = parse(&wire);
    assert_eq!(resp.answers.len(), dns::BIG_TXT_COUNT);
    assert!(dns::answer_strings(&resp).iter().all(|s| s.len() == dns::BIG_TXT_LEN));
    assert!(!resp.metadata.truncation);
}

#[tokio::test]
async fn close_after_two_closes_after_two_answers() {
    let up = TestUpstream::with_fault(Fault::CloseAfter(2)).await;
    let mut c = connect(&up).await;
    for id in 1..=3 {
        c.send(&query(id, "a.test", RecordType::A)).await.unwrap();
    }
    assert_eq!(dns::wire_id(&c.recv_timeout(ANSWER).await.unwrap().unwrap()), 1);
    assert_eq!(dns::wire_id(&c.recv_timeout(ANSWER).await.unwrap().unwrap()), 2);
    // Then a clean close (close_notify + FIN), not a third answer.
    assert!(c.recv_timeout(ANSWER).await.unwrap().is_none());
    assert_eq!(up.answers_sent(), 2);

    // A new connection gets two more.
    let mut c = connect(&up).await;
    assert!(c.query(&query(4, "a.test", RecordType::A)).await.is_ok());
    assert_eq!(up.connections_accepted(), 2);
}

#[tokio::test]
async fn reset_after_one_resets() {
    let up = TestUpstream::with_fault(Fault::ResetAfter(1)).await;
    let mut c = connect(&up).await;
    c.send(&query(1, "a.test", RecordType::A)).await.unwrap();
    c.send(&query(2, "a.test", RecordType::A)).await.unwrap();
    // The first answer may or may not survive the RST in the client's buffer; what
    // matters is that the connection ends with an error, not a clean close.
    let mut saw_error = false;
    for _ in 0..2 {
        match c.recv_timeout(ANSWER).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "expected a reset: {e}");
                saw_error = true;
                break;
            }
        }
    }
    assert!(saw_error, "connection was not reset");
}

#[tokio::test]
async fn never_answer_times_out_but_counts() {
    let up = TestUpstream::with_fault(Fault::NeverAnswer).await;
    let mut c = connect(&up).await;
    c.send(&query(1, "a.test", RecordType::A)).await.unwrap();
    let err = c.recv_timeout(SILENCE).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(up.wait_for_queries(1, ANSWER).await);
    assert_eq!(up.handshakes_completed(), 1);
    assert_eq!(up.answers_sent(), 0);
}

#[tokio::test]
async fn out_of_order_three_answers_in_reverse() {
    let up = TestUpstream::with_fault(Fault::OutOfOrder(3)).await;
    let mut c = connect(&up).await;
    for id in [10, 11, 12] {
        c.send(&query(id, "a.test", RecordType::A)).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(dns::wire_id(&c.recv_timeout(ANSWER).await.unwrap().unwrap()));
    }
    assert_eq!(ids, [12, 11, 10]);
}

#[tokio::test]
async fn stop_answering_after_then_resume() {
    let up = TestUpstream::with_fault(Fault::StopAnsweringAfter(2)).await;
    let mut c = connect(&up).await;
    for id in 1..=3 {
        c.send(&query(id, "a.test", RecordType::A)).await.unwrap();
    }
    assert_eq!(dns::wire_id(&c.recv_timeout(ANSWER).await.unwrap().unwrap()), 1);
    assert_eq!(dns::wire_id(&c.recv_timeout(ANSWER).await.unwrap().unwrap()), 2);
    assert!(c.recv_timeout(SILENCE).await.is_err(), "third query must stay unanswered");
    assert_eq!(up.queries_received(), 3);

    // Silence is global: a second connection gets nothing either, but stays open.
    let mut c2 = connect(&up).await;
    c2.send(&query(4, "a.test", RecordType::A)).await.unwrap();
    assert!(c2.recv_timeout(SILENCE).await.is_err());

    // set_fault takes effect on the next query, on the same connection.
    up.set_fault(Fault::None);
    assert_eq!(dns::wire_id(&c.query(&query(5, "a.test", RecordType::A)).await.unwrap()), 5);
}

#[tokio::test]
async fn delay_answers_late_but_answers() {
    let up = TestUpstream::with_fault(Fault::Delay(Duration::from_millis(300))).await;
    let mut c = connect(&up).await;
    c.send(&query(1, "a.test", RecordType::A)).await.unwrap();
    assert!(c.recv_timeout(Duration::from_millis(100)).await.is_err());
    assert!(c.recv_timeout(Duration::from_secs(2)).await.unwrap().is_some());
}

async fn wrong_key_fails_with(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let up = TestUpstream::with_fault(Fault::WrongKey).await;
    let cfg = common::client::client_config_with(&up.ca_pem, versions);
    // The trust anchor is the leaf itself, so the chain is valid: only the handshake
    // signature can fail.
    let err = DotClient::connect_with(up.addr, &up.tls_name, cfg.clone())
        .await
        .err()
        .expect("handshake with the wrong key must fail");
    let msg = format!("{err:?}");
    assert!(msg.contains("BadSignature"), "unexpected error: {msg}");

    // Control: the same client succeeds once the server signs with the right key.
    up.set_fault(Fault::None);
    let mut c = DotClient::connect_with(up.addr, &up.tls_name, cfg).await.unwrap();
    assert!(c.query(&query(1, "a.test", RecordType::A)).await.is_ok());
    assert_eq!(c.protocol_version(), Some(versions[0].version));
}

#[tokio::test]
async fn wrong_key_fails_the_handshake_tls13() {
    wrong_key_fails_with(&[&rustls::version::TLS13]).await;
}

#[tokio::test]
async fn wrong_key_fails_the_handshake_tls12() {
    wrong_key_fails_with(&[&rustls::version::TLS12]).await;
}

#[tokio::test]
async fn with_intermediate_presents_two_certs_and_verifies_from_the_root() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    assert_eq!(up.chain.len(), 2);
    let mut c = connect(&up).await; // verifies leaf <- intermediate <- root(ca_pem)
    assert_eq!(c.peer_certificates().len(), 2);
    assert!(c.query(&query(1, "a.test", RecordType::A)).await.is_ok());

    assert_eq!(spki_pin_of(&up.chain[0]), up.leaf_key_pin);
    assert_eq!(Some(spki_pin_of(&up.chain[1])), up.intermediate_key_pin);
    assert_eq!(Some(spki_pin_of(&up.ca_der)), up.root_key_pin);
    let pins =
        [&up.leaf_key_pin, up.intermediate_key_pin.as_ref().unwrap(), up.root_key_pin.as_ref().unwrap()];
    assert!(pins[0] != pins[1] && pins[1] != pins[2] && pins[0] != pins[2]);
}

#[tokio::test]
async fn wrong_tls_name_is_rejected_by_a_ca_client() {
    let up = honest().await;
    let err = DotClient::connect(up.addr, "other.test", &up.ca_pem).await.err().unwrap();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
}

#[tokio::test]
async fn pins_match_webpki_and_openssl() {
    let up = honest().await;
    assert!(up.leaf_key_pin.starts_with("key-fp:SHA256:"));
    assert!(up.leaf_cert_pin.starts_with("cert-fp:SHA256:"));
    assert_eq!(spki_pin_of(&up.chain[0]), up.leaf_key_pin);
    assert_eq!(cert_pin_of(&up.chain[0]), up.leaf_cert_pin);
    assert_eq!(up.ca_der, up.chain[0], "self-signed: the leaf is the anchor");
    assert_ne!(unrelated_key_pin(), up.leaf_key_pin);

    if std::process::Command::new("sh")
        .args(["-c", "command -v openssl"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        eprintln!("openssl not installed: skipping the openssl cross-check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pem = common::pki::write_pem(dir.path(), "leaf.pem", &up.leaf_pem);
    let script = "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
                  | openssl dgst -sha256 -binary | base64";
    let out = std::process::Command::new("sh").args(["-c", script, "sh"]).arg(&pem).output().unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let b64 = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(format!("key-fp:SHA256:{b64}"), up.leaf_key_pin);

    let script = "openssl x509 -in \"$1\" -outform der | openssl dgst -sha256 -binary | base64";
    let out = std::process::Command::new("sh").args(["-c", script, "sh"]).arg(&pem).output().unwrap();
    let b64 = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(format!("cert-fp:SHA256:{b64}"), up.leaf_cert_pin);
}

#[tokio::test]
async fn stall_handshake_accepts_tcp_but_never_finishes_tls() {
    let up = TestUpstream::with_fault(Fault::StallHandshake).await;
    let cfg = client_config(&up.ca_pem);
    let fut = DotClient::connect_with(up.addr, &up.tls_name, cfg);
    assert!(tokio::time::timeout(SILENCE, fut).await.is_err(), "handshake must stall");
    assert_eq!(up.connections_accepted(), 1);
    assert_eq!(up.handshakes_completed(), 0);
}

#[tokio::test]
async fn reset_on_accept_fails_fast() {
    let up = TestUpstream::with_fault(Fault::ResetOnAccept).await;
    let res = tokio::time::timeout(ANSWER, DotClient::connect(up.addr, &up.tls_name, &up.ca_pem)).await;
    let err = res.expect("must fail fast, not hang").err().expect("must fail");
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(up.wait_for_connections(1, ANSWER).await);
}

#[tokio::test]
async fn plain_tcp_and_udp_mode() {
    let up = TestUpstream::start(UpstreamOptions { tls: false, udp: true, ..Default::default() }).await;
    let resp = parse(&tcp_query(up.addr, &query(1, "a.test", RecordType::A)).await.unwrap());
    assert_eq!(dns::answer_strings(&resp), ["192.0.2.1"]);
    let resp = parse(&udp_query(up.addr, &query(2, "txt.test", RecordType::TXT), ANSWER).await.unwrap());
    assert_eq!(dns::answer_strings(&resp), ["hello"]);

    // big.test over UDP: truncated to the advertised 1232 bytes (TC set, no records).
    let wire = udp_query(up.addr, &query(3, "big.test", RecordType::TXT), ANSWER).await.unwrap();
    assert!(wire.len() <= 1232);
    let resp = parse(&wire);
    assert!(resp.metadata.truncation && resp.answers.is_empty());
    // Whole over TCP.
    let wire = tcp_query(up.addr, &query(4, "big.test", RecordType::TXT)).await.unwrap();
    assert!(wire.len() > 1232 && !parse(&wire).metadata.truncation);
    assert_eq!(up.handshakes_completed(), 0);
    assert_eq!(up.queries_received(), 4);
}

#[tokio::test]
async fn ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no ::1 on this machine: skipping");
        return;
    }
    let up =
        TestUpstream::start(UpstreamOptions { bind: "[::1]:0".parse().unwrap(), ..Default::default() }).await;
    assert!(up.addr.is_ipv6());
    let mut c = connect(&up).await;
    assert!(c.query(&query(1, "a.test", RecordType::A)).await.is_ok());
}

#[tokio::test]
async fn shutdown_and_wait_closes_everything() {
    let up = honest().await;
    let addr = up.addr;
    let mut c = connect(&up).await;
    assert!(c.query(&query(1, "a.test", RecordType::A)).await.is_ok());
    up.shutdown_and_wait().await;
    // The open connection is gone (EOF or reset) and new connections are refused.
    match c.recv_timeout(ANSWER).await {
        Ok(None) | Err(_) => {}
        Ok(Some(_)) => panic!("answer after shutdown"),
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn pipelined_many_queries_on_one_connection() {
    let up = honest().await;
    let mut c = connect(&up).await;
    for id in 0..50u16 {
        c.send(&query(id, "a.test", RecordType::A)).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(dns::wire_id(&c.recv_timeout(Duration::from_secs(2)).await.unwrap().unwrap()));
    }
    ids.sort();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    assert_eq!(up.connections_accepted(), 1);
}
