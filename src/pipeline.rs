//! The query pipeline: one client query in, one answer out, always within
//! `query_timeout` (SERVFAIL at worst).
//!
//! Owns the client-facing bound on time. The cache and coalescing slot in here.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::{message::ClientQuery, upstream::pool::Pool};

pub struct Pipeline {
    pool: Pool,
    query_timeout: Duration,
}

impl Pipeline {
    pub fn new(pool: Pool, query_timeout: Duration) -> Self {
        Self {
            pool,
            query_timeout,
        }
    }

    /// Answers `query`. Never fails: an upstream failure becomes SERVFAIL in bounded time.
    pub async fn resolve(&self, query: &ClientQuery) -> Message {
        match timeout(self.query_timeout, self.pool.forward(query)).await {
            Ok(Ok(wire)) => query.answer_from_upstream(&wire).unwrap_or_else(|err| {
                warn!(%err, name = %query.query.name(), "unusable upstream answer");
                query.error_answer(ResponseCode::ServFail)
            }),
            Ok(Err(err)) => {
                debug!(%err, name = %query.query.name(), "answering SERVFAIL");
                query.error_answer(ResponseCode::ServFail)
            }
            Err(_) => {
                debug!(name = %query.query.name(), "query timed out; answering SERVFAIL");
                query.error_answer(ResponseCode::ServFail)
            }
        }
    }
}
