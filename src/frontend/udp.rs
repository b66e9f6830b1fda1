//! Serving one UDP socket: cache hits inline, misses as tasks under the in-flight cap.

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::UdpSocket, sync::watch};
use tracing::debug;

use super::{
    Context,
    request::{Verdict, classify, fit_udp},
};

/// Largest datagram we read; bigger ones arrive cut and fail to parse.
const MAX_DATAGRAM: usize = 65_535;

pub(super) async fn serve(
    socket: Arc<UdpSocket>,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, src) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(err) => {
                    debug!(%err, "udp receive error");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        match classify(&buf[..len], src.ip(), &ctx.acl) {
            Verdict::Drop => {}
            Verdict::Reply(wire) => send(&socket, &wire, src).await,
            Verdict::Query(query) => {
                let limit = query.udp_limit();
                if let Some(wire) = ctx.pipeline.cached(&query) {
                    send(&socket, &fit_udp(wire, limit), src).await;
                    continue;
                }
                let Some(permit) = ctx.admit() else { continue };
                let (socket, ctx) = (socket.clone(), ctx.clone());
                tokio::spawn(async move {
                    let wire = ctx.pipeline.resolve(&query).await;
                    send(&socket, &fit_udp(wire, limit), src).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn send(socket: &UdpSocket, wire: &[u8], to: SocketAddr) {
    if wire.is_empty() {
        return;
    }
    if let Err(err) = socket.send_to(wire, to).await {
        debug!(%err, %to, "udp send error");
    }
}
