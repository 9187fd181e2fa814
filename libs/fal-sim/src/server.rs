//! The accept loop: HTTP/1.1 and HTTP/2, over TLS or not, until shutdown.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::faults::{Faults, Injector};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` (with TLS when `tls` is given) until `shutdown`. While
/// `faults` refuse connections, the port is closed and open connections are dropped.
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    shutdown: CancellationToken,
    faults: Arc<Injector>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        let mut listener = listener;
        let mut changes = faults.subscribe();
        loop {
            if let Some(until) = faults.current().refusing_until() {
                match refuse(listener, until.into(), &mut changes, &shutdown).await {
                    Some(reopened) => listener = reopened,
                    None => break,
                }
            }
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = changes.changed() => continue,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (router, acceptor, shutdown) = (router.clone(), acceptor.clone(), shutdown.clone());
            let cut = faults.subscribe();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                serve(TokioIo::new(stream), router, shutdown, cut).await;
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "tls handshake failed"),
                            Err(_) => tracing::debug!("tls handshake timed out"),
                        }
                    }
                    None => serve(TokioIo::new(stream), router, shutdown, cut).await,
                }
            });
        }
        tracing::debug!("fal simulator stopped accepting connections");
    });
}

/// Closes the port until the refusing outage ends (or is lifted), then listens on the same
/// address again; `None` at shutdown or when the address cannot be had back.
async fn refuse(
    listener: TcpListener,
    mut until: tokio::time::Instant,
    changes: &mut watch::Receiver<Faults>,
    shutdown: &CancellationToken,
) -> Option<TcpListener> {
    let addr = listener.local_addr().ok()?;
    drop(listener);
    tracing::info!(%addr, "fal simulator refusing connections");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep_until(until) => {}
            _ = changes.changed() => {}
        }
        match changes.borrow_and_update().refusing_until() {
            Some(later) => until = later.into(),
            None => break,
        }
    }
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "fal simulator accepting connections again");
                return Some(listener);
            }
            Err(error) => {
                tracing::warn!(%error, %addr, "listening again failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::error!(%addr, "fal simulator cannot listen again");
    None
}

async fn serve<I>(
    io: I,
    router: Router,
    shutdown: CancellationToken,
    mut cut: watch::Receiver<Faults>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(router));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, connection).await;
        }
        // A refusing outage drops the connection outright.
        () = async {
            let _ = cut.wait_for(|faults| faults.refusing_until().is_some()).await;
        } => {}
    }
}
