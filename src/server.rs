//! The client side: hickory-server's `RequestHandler`, plus the checks it leaves to us.
//!
//! hickory-server already drops datagrams shorter than a header, answers FORMERR when the
//! header parses but the rest does not (and when a query has two OPTs), ignores responses,
//! and applies the `allow` list (REFUSED). This module adds: QDCOUNT must be 1 (FORMERR),
//! only QUERY (NOTIMP), EDNS version 0 (BADVERS), the in-flight cap, draining on shutdown,
//! and UDP truncation to the client's limit. It must never panic on any input.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use hickory_proto::op::{Header, HeaderCounts, Message, OpCode, ResponseCode};
use hickory_server::{
    net::{runtime::Time, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::{
    message::{ClientEdns, ClientQuery},
    pipeline::Pipeline,
};

/// State shared between the handler and the daemon (for draining).
pub struct Handler {
    pipeline: Arc<Pipeline>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    draining: Arc<AtomicBool>,
    dropped_over_cap: AtomicU64,
}

impl Handler {
    pub fn new(pipeline: Arc<Pipeline>, max_in_flight: usize, draining: Arc<AtomicBool>) -> Self {
        Self {
            pipeline,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            draining,
            dropped_over_cap: AtomicU64::new(0),
        }
    }

    /// A handle that reports how many client queries are being answered right now.
    pub fn in_flight_gauge(&self) -> InFlightGauge {
        InFlightGauge {
            semaphore: self.in_flight.clone(),
            max: self.max_in_flight,
        }
    }
}

/// Counts queries being answered, so shutdown can wait for them.
#[derive(Clone)]
pub struct InFlightGauge {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl InFlightGauge {
    pub fn current(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

/// The checks on a parsed request that decide whether it is a query we answer.
fn client_query(request: &Request) -> Result<ClientQuery, ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let [question] = request.queries.queries() else {
        return Err(ResponseCode::FormErr);
    };
    let edns = match &request.edns {
        // RFC 6891 §6.1.3: we speak version 0 only.
        Some(e) if e.version() > 0 => return Err(ResponseCode::BADVERS),
        Some(e) => Some(ClientEdns {
            dnssec_ok: e.flags().dnssec_ok,
            max_payload: e.max_payload(),
        }),
        None => None,
    };
    Ok(ClientQuery {
        id: request.metadata.id,
        query: question.original().clone(),
        recursion_desired: request.metadata.recursion_desired,
        checking_disabled: request.metadata.checking_disabled,
        authentic_data: request.metadata.authentic_data,
        edns,
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let not_sent = ResponseInfo::from(Header {
            metadata: request.metadata,
            counts: HeaderCounts::default(),
        });
        if self.draining.load(Ordering::Relaxed) {
            // Shutting down: stop taking new work; in-flight queries still finish.
            return not_sent;
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            let dropped = self.dropped_over_cap.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(
                    dropped,
                    limit = self.max_in_flight,
                    "server.max_inflight reached; dropping queries"
                );
            }
            return not_sent;
        };
        let answer = match client_query(request) {
            Ok(query) => {
                let wire = self.pipeline.resolve(&query).await;
                let answer = match Message::from_vec(&wire) {
                    Ok(answer) => answer,
                    Err(_) => query.error_answer(ResponseCode::ServFail),
                };
                let limit = match request.protocol() {
                    Protocol::Udp => Some(query.udp_limit()),
                    _ => None,
                };
                fit_to_limit(answer, limit)
            }
            Err(rcode) => {
                debug!(src = %request.src(), %rcode, "rejecting query");
                let mut msg =
                    Message::error_msg(request.metadata.id, request.metadata.op_code, rcode);
                msg.metadata.recursion_desired = request.metadata.recursion_desired;
                if rcode == ResponseCode::BADVERS {
                    // The extended RCODE lives in the OPT (RFC 6891 §6.1.3).
                    msg.edns = Some(hickory_proto::op::Edns::new());
                }
                msg
            }
        };
        send(request, response_handle, answer)
            .await
            .unwrap_or(not_sent)
    }
}

/// RFC 6891 §7 / RFC 2181 §9: a UDP answer larger than the client can take goes out as
/// header + question + OPT with TC=1, and the client retries over TCP.
fn fit_to_limit(answer: Message, limit: Option<u16>) -> Message {
    let Some(limit) = limit else { return answer };
    match answer.to_vec() {
        Ok(wire) if wire.len() <= usize::from(limit) => answer,
        _ => answer.truncate(),
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    mut response_handle: R,
    answer: Message,
) -> Option<ResponseInfo> {
    let mut metadata = answer.metadata;
    metadata.id = request.metadata.id;
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = &answer.edns {
        builder.edns(edns);
    }
    let response = builder.build(
        metadata,
        answer.answers.iter(),
        answer.authorities.iter(),
        std::iter::empty(),
        answer.additionals.iter(),
    );
    match response_handle.send_response(response).await {
        Ok(info) => Some(info),
        Err(err) => {
            debug!(%err, src = %request.src(), "could not send answer");
            None
        }
    }
}
