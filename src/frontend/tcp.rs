//! Serving TCP clients (RFC 7766): length-prefixed frames, each connection's queries
//! answered concurrently (in any order, as §6.2.1.1 allows), idle connections closed.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    time::timeout,
};
use tracing::{debug, warn};

use super::{
    Context, TCP_PIPELINE_DEPTH,
    request::{Verdict, classify},
};
use crate::{metrics::ClientTransport::Tcp, pipeline::Source};

pub(super) async fn serve(listener: TcpListener, ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let mut refused = 0u64;
    loop {
        let (stream, src) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    debug!(%err, "tcp accept error");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = ctx.tcp_clients.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(
                    refused,
                    limit = ctx.limits.max_tcp_clients,
                    "server.max_tcp_clients reached; closing new connections"
                );
            }
            continue;
        };
        tokio::spawn(connection(stream, src, ctx.clone(), stop.clone(), slot));
    }
}

async fn read_frame(reader: &mut OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let len = reader.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    reader.read_exact(&mut message).await?;
    Ok(message)
}

async fn connection(
    stream: TcpStream,
    src: SocketAddr,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut outbox) = mpsc::channel::<Vec<u8>>(TCP_PIPELINE_DEPTH);
    let write = tokio::spawn(async move {
        let mut frame = Vec::with_capacity(512);
        while let Some(wire) = outbox.recv().await {
            frame.clear();
            frame.extend_from_slice(&(wire.len() as u16).to_be_bytes());
            frame.extend_from_slice(&wire);
            // Length and message in one write (RFC 7766 §8).
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let depth = Arc::new(Semaphore::new(TCP_PIPELINE_DEPTH));
    loop {
        let message = tokio::select! {
            read = timeout(ctx.limits.tcp_idle_timeout, read_frame(&mut reader)) => match read {
                Ok(Ok(m)) => m,
                // EOF, an error, or idle: stop reading; answers in flight still go out.
                _ => break,
            },
            _ = stop.changed() => break,
        };
        match classify(&message, src.ip(), &ctx.acl()) {
            Verdict::Drop => {}
            Verdict::Reply(wire) => {
                ctx.replied(Tcp, src, &wire);
                if answers.send(wire).await.is_err() {
                    break;
                }
            }
            Verdict::Query(query) => {
                let started = ctx.query_clock();
                let miss = match ctx.pipeline.cached(&query) {
                    Err(miss) => miss,
                    Ok(wire) => {
                        ctx.answered(Tcp, src, &query.query, &wire, &Source::Cache, started);
                        if answers.send(wire).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                // Back-pressure: a client with too many queries in flight waits.
                let Ok(turn) = depth.clone().acquire_owned().await else {
                    break;
                };
                let Some(permit) = ctx.admit() else { continue };
                let (ctx, answers) = (ctx.clone(), answers.clone());
                tokio::spawn(async move {
                    let answer = ctx.pipeline.answer_miss(&query, miss).await;
                    ctx.answered(Tcp, src, &query.query, &answer.wire, &answer.source, started);
                    let _ = answers.send(answer.wire).await;
                    drop((permit, turn));
                });
            }
        }
    }
    drop(answers);
    let _ = write.await;
}
