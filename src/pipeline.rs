//! The query pipeline: one client query in, one answer out, always within
//! `query_timeout` (SERVFAIL at worst, with an Extended DNS Error saying why).
//!
//! Owns the client-facing bound on time and coalescing: identical questions in flight
//! together (name case-insensitive, type, class, DO, CD) share one upstream query.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{DNSClass, LowerName, RecordType},
};
use tokio::{sync::watch, time::timeout};
use tracing::debug;

use crate::{
    message::{ClientQuery, Ede, add_ede, parse_upstream},
    upstream::pool::{ForwardError, Pool},
};

/// Identical questions share one upstream query (RFC 5452 §5 recommends it; it also keeps
/// a burst of the same name from multiplying upstream load).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CoalesceKey {
    name: LowerName,
    qtype: RecordType,
    qclass: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CoalesceKey {
    fn of(q: &ClientQuery) -> Self {
        Self {
            name: LowerName::new(q.query.name()),
            qtype: q.query.query_type(),
            qclass: q.query.query_class(),
            dnssec_ok: q.dnssec_ok(),
            checking_disabled: q.checking_disabled,
        }
    }
}

/// Why there is no upstream answer, as the client will be told (RFC 8914).
#[derive(Debug, Clone)]
enum Failure {
    /// Nothing answered in time: EDE 22.
    Timeout(Duration),
    /// Connections or TLS failed: EDE 23.
    Network(String),
    /// An answer came but was unusable.
    BadAnswer(String),
}

type Outcome = Result<Arc<Message>, Failure>;
type Waiters = Mutex<HashMap<CoalesceKey, watch::Receiver<Option<Outcome>>>>;

pub struct Pipeline {
    pool: Pool,
    query_timeout: Duration,
    in_flight: Waiters,
}

/// Removes the leader's entry however the leader ends, so no follower waits on nothing.
struct LeaderGuard<'a> {
    waiters: &'a Waiters,
    key: Option<CoalesceKey>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

impl Pipeline {
    pub fn new(pool: Pool, query_timeout: Duration) -> Self {
        Self {
            pool,
            query_timeout,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Answers `query`. Never fails: an upstream failure becomes SERVFAIL in bounded time.
    pub async fn resolve(&self, query: &ClientQuery) -> Message {
        let key = CoalesceKey::of(query);
        let joined = {
            let mut waiters = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match waiters.get(&key) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    waiters.insert(key.clone(), rx);
                    Ok(tx)
                }
            }
        };
        let outcome = match joined {
            Ok(tx) => {
                let _guard = LeaderGuard {
                    waiters: &self.in_flight,
                    key: Some(key),
                };
                let outcome = self.fetch(query).await;
                let _ = tx.send(Some(outcome.clone()));
                outcome
            }
            Err(rx) => self.follow(rx).await,
        };
        match outcome {
            Ok(answer) => query.answer_from_upstream(&answer),
            Err(failure) => {
                debug!(name = %query.query.name(), ?failure, "answering SERVFAIL");
                let mut msg = query.error_answer(ResponseCode::ServFail);
                let (code, text) = match &failure {
                    Failure::Timeout(t) => (
                        Ede::NoReachableAuthority,
                        format!("no upstream answered within {} ms", t.as_millis()),
                    ),
                    Failure::Network(why) => (Ede::NetworkError, why.clone()),
                    Failure::BadAnswer(why) => (Ede::Other, why.clone()),
                };
                add_ede(&mut msg, code, &text);
                msg
            }
        }
    }

    async fn follow(&self, mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
        let wait = async {
            loop {
                if let Some(outcome) = rx.borrow_and_update().clone() {
                    return outcome;
                }
                if rx.changed().await.is_err() {
                    return Err(Failure::Network(
                        "the shared upstream query was abandoned".into(),
                    ));
                }
            }
        };
        timeout(self.query_timeout, wait)
            .await
            .unwrap_or(Err(Failure::Timeout(self.query_timeout)))
    }

    async fn fetch(&self, query: &ClientQuery) -> Outcome {
        match timeout(self.query_timeout, self.pool.forward(query)).await {
            Err(_) => Err(Failure::Timeout(self.query_timeout)),
            Ok(Err(err @ (ForwardError::NoConnection(_) | ForwardError::Closed))) => {
                Err(Failure::Network(err.to_string()))
            }
            Ok(Err(err)) => Err(Failure::BadAnswer(err.to_string())),
            Ok(Ok((wire, conn))) => match parse_upstream(&wire) {
                Ok((msg, keepalive)) => {
                    if let Some(k) = keepalive {
                        conn.honour_keepalive(k);
                    }
                    Ok(Arc::new(msg))
                }
                Err(err) => Err(Failure::BadAnswer(err.to_string())),
            },
        }
    }
}
