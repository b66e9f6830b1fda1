use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::*;

/// A query for `name` A IN with ID `id`, as the pool sends it.
fn query(id: u16, name: &[&str]) -> Vec<u8> {
    let mut wire = id.to_be_bytes().to_vec();
    wire.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.extend_from_slice(&[0, 0, 1, 0, 1]);
    wire
}

/// The answer to `query` (ID kept) with one A record of `ttl`.
fn answer(query: &[u8], ttl: u32) -> Vec<u8> {
    let mut wire = query.to_vec();
    wire[2] |= 0x80;
    wire[3] = 0x80;
    wire[7] = 1;
    wire.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    wire.extend_from_slice(&ttl.to_be_bytes());
    wire.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
    wire
}

fn head(content_type: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
    h
}

fn question(wire: &[u8]) -> Vec<u8> {
    question_bytes(wire).unwrap().to_vec()
}

#[test]
fn the_request_is_a_post_of_the_dns_media_type_to_the_configured_path() {
    let endpoint = Endpoint::new("dns.example", "/dns-query").unwrap();
    let req = endpoint.request(128);
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().to_string(), "https://dns.example/dns-query");
    assert_eq!(req.headers()[header::CONTENT_TYPE], DNS_MESSAGE);
    assert_eq!(req.headers()[header::ACCEPT], DNS_MESSAGE);
    assert_eq!(req.headers()[header::CONTENT_LENGTH], "128");
    let v6 = Endpoint::new("[2001:db8::1]:8443", "/q").unwrap();
    assert_eq!(v6.request(1).uri().authority().unwrap().as_str(), "[2001:db8::1]:8443");
}

#[test]
fn the_query_goes_out_under_id_0_and_the_answer_comes_back_under_the_clients() {
    let mut wire = query(0xbeef, &["example", "org"]);
    assert_eq!(zero_id(&mut wire), 0xbeef);
    assert_eq!(&wire[..2], &[0, 0]);
    let back = accept_answer(Bytes::from(answer(&wire, 300)), &question(&wire), 0xbeef, 0).unwrap();
    let Answer::Message(back) = back else { panic!("not a message") };
    assert_eq!(&back[..2], &[0xbe, 0xef]);
    assert_eq!(back[2..], answer(&wire, 300)[2..]);
}

#[test]
fn only_a_2xx_of_the_dns_media_type_is_read() {
    let ok = head(Some(DNS_MESSAGE));
    assert_eq!(check_head(StatusCode::OK, &ok), Ok(()));
    // Media types are case-insensitive and may carry parameters (RFC 9110 §8.3.1).
    assert_eq!(check_head(StatusCode::OK, &head(Some("Application/DNS-Message; charset=x"))), Ok(()));
    assert_eq!(check_head(StatusCode::INTERNAL_SERVER_ERROR, &ok), Err(StreamFailure::Status(500)));
    assert_eq!(check_head(StatusCode::MOVED_PERMANENTLY, &ok), Err(StreamFailure::Status(301)));
    assert_eq!(check_head(StatusCode::OK, &head(Some("text/html"))), Err(StreamFailure::ContentType));
    assert_eq!(
        check_head(StatusCode::OK, &head(Some("application/dns-message-x"))),
        Err(StreamFailure::ContentType)
    );
    assert_eq!(check_head(StatusCode::OK, &head(None)), Err(StreamFailure::ContentType));
    let mut long = head(Some(DNS_MESSAGE));
    long.insert(header::CONTENT_LENGTH, HeaderValue::from(65_536));
    assert_eq!(check_head(StatusCode::OK, &long), Err(StreamFailure::TooLarge));
}

#[test]
fn a_body_that_is_not_this_querys_answer_is_refused() {
    let mut wire = query(7, &["a", "test"]);
    zero_id(&mut wire);
    let q = question(&wire);
    let good = answer(&wire, 60);
    let refuse = |body: Vec<u8>| accept_answer(Bytes::from(body), &q, 7, 0);
    // Another question: never cached under this one.
    let mut other = query(0, &["b", "test"]);
    zero_id(&mut other);
    assert_eq!(refuse(answer(&other, 60)), Err(StreamFailure::NotTheAnswer));
    // An ID other than the 0 we sent.
    let mut id = good.clone();
    id[1] = 1;
    assert_eq!(refuse(id), Err(StreamFailure::NotTheAnswer));
    // Not a response (QR clear): our own query reflected.
    assert_eq!(refuse(wire.clone()), Err(StreamFailure::NotTheAnswer));
    assert_eq!(refuse(vec![0; 5]), Err(StreamFailure::NotTheAnswer));
    assert_eq!(refuse(vec![0; MAX_ANSWER + 1]), Err(StreamFailure::TooLarge));
    // A header-only FORMERR is the server's verdict on this stream's query.
    let mut formerr = vec![0, 0, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(refuse(formerr.clone()), Ok(Answer::Questionless(1)));
    formerr[3] = 0x00; // NOERROR without a question is not an answer
    assert_eq!(refuse(formerr), Err(StreamFailure::NotTheAnswer));
}

#[test]
fn the_age_an_http_cache_held_the_answer_comes_off_every_ttl() {
    let mut wire = query(9, &["aged", "test"]);
    zero_id(&mut wire);
    let mut h = head(Some(DNS_MESSAGE));
    assert_eq!(age(&h), 0);
    h.insert(header::AGE, HeaderValue::from_static("100"));
    assert_eq!(age(&h), 100);
    let Ok(Answer::Message(back)) = accept_answer(Bytes::from(answer(&wire, 300)), &question(&wire), 9, 100)
    else {
        panic!("refused")
    };
    let ttl_at = back.len() - 10;
    assert_eq!(u32::from_be_bytes(back[ttl_at..ttl_at + 4].try_into().unwrap()), 200);
    let Ok(Answer::Message(back)) = accept_answer(Bytes::from(answer(&wire, 30)), &question(&wire), 9, 100)
    else {
        panic!("refused")
    };
    assert_eq!(u32::from_be_bytes(back[ttl_at..ttl_at + 4].try_into().unwrap()), 0, "never below 0");
    h.insert(header::AGE, HeaderValue::from_static("soon"));
    assert_eq!(age(&h), 0, "an unreadable Age is ignored");
}
