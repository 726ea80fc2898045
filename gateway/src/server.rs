//! Listening and draining.
//!
//! One accept loop serves HTTP/1.1 and cleartext HTTP/2 (h2c, detected by
//! the connection preface) on the same port; [`serve_tls`] does the same
//! over TLS (HTTP/2 offered by ALPN), handshaking in each connection's own
//! task so a slow client cannot stall the loop. On shutdown the loop stops
//! accepting, tells every connection to finish its in-flight requests
//! (HTTP/2 GOAWAY, HTTP/1 close after the current response) and waits up to
//! the drain timeout; then it ships what the spool holds if it can.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;

use crate::{
    mtls::{ClientCert, TlsServer},
    proxy::{Gateway, handle},
};

/// Serve `gateway` on `listener` until `shutdown` resolves, then drain for at
/// most `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    serve_with(listener, None, gateway, shutdown, drain).await
}

/// Like [`serve`], over TLS: each request carries its connection's verified
/// client certificate identity, if any (see [`crate::mtls`]).
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsServer,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    serve_with(listener, Some(tls), gateway, shutdown, drain).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsServer>,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let service = move |cert: Option<ClientCert>| {
            service_fn(move |mut req: hyper::Request<Incoming>| {
                if let Some(cert) = &cert {
                    req.extensions_mut().insert(cert.clone());
                }
                let gw = gw.clone();
                async move { Ok::<_, Infallible>(handle(gw, req).await) }
            })
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service(None));
                    watcher.watch(conn).await
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok((stream, cert)) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service(cert));
                        watcher.watch(conn).await
                    }
                    Err(e) => {
                        // A certificate from another CA, expired, or none
                        // where one is required all end here.
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                },
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // New clients are refused at once rather than left waiting on a
    // listener nobody accepts from while the open connections drain.
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain timed out; closing remaining connections");
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
