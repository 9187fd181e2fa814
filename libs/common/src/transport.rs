//! The connections between services: TLS over TCP, or an in-memory pipe when the
//! service called runs in the caller's own process (`atelier serve --target all`, the
//! embedded default and the test platform).
//!
//! A pipe carries the same gRPC (HTTP/2 frames, the same server stack, the same
//! checks of who is calling) without the loopback network and the encryption, which
//! cost more than the calls themselves when every service shares two cores. It is
//! used only where TLS would have connected: a gRPC server of this process listens on
//! the port asked for, on a loopback or unspecified address, and each side's
//! certificate is one the other would accept in a handshake. The caller's service is
//! read from its certificate, as from a TLS peer's.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{LazyLock, Mutex, MutexGuard},
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf},
    net::TcpStream,
    sync::mpsc,
};
use tokio_rustls::{client, server};
use tonic::transport::server::Connected;

use crate::identity::{Identity, ServiceName};

/// How many bytes a pipe holds in each direction before a writer waits.
const PIPE_BUFFER: usize = 256 * 1024;

/// What a server learns of a connection when it is accepted: the service whose
/// certificate the caller presented, if any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) service: Option<ServiceName>,
}

/// A connection between services, as a server accepted it or a caller opened it.
pub(crate) struct Connection {
    stream: Stream,
    /// Server side: who called.
    peer: PeerInfo,
}

enum Stream {
    Accepted(Box<server::TlsStream<TcpStream>>),
    Opened(Box<client::TlsStream<TcpStream>>),
    Pipe(DuplexStream),
}

impl Connection {
    /// A TLS connection a server accepted, its caller named by the certificate it
    /// presented.
    pub(crate) fn accepted(tls: server::TlsStream<TcpStream>) -> Self {
        let service = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(crate::identity::identity_of);
        Self {
            stream: Stream::Accepted(Box::new(tls)),
            peer: PeerInfo { service },
        }
    }

    /// A TLS connection a caller opened.
    pub(crate) fn opened(tls: client::TlsStream<TcpStream>) -> Self {
        Self {
            stream: Stream::Opened(Box::new(tls)),
            peer: PeerInfo { service: None },
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer
    }
}

/// Calls `$call` on the stream a connection holds, pinned.
macro_rules! on_stream {
    ($connection:expr, $io:ident => $call:expr) => {
        match &mut $connection.get_mut().stream {
            Stream::Accepted($io) => {
                let $io = Pin::new($io.as_mut());
                $call
            }
            Stream::Opened($io) => {
                let $io = Pin::new($io.as_mut());
                $call
            }
            Stream::Pipe($io) => {
                let $io = Pin::new($io);
                $call
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_stream!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Accepted(io) => io.is_write_vectored(),
            Stream::Opened(io) => io.is_write_vectored(),
            Stream::Pipe(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, io => io.poll_shutdown(cx))
    }
}

/// A gRPC server of this process that takes pipes.
struct LocalServer {
    identity: Identity,
    accepted: mpsc::Sender<io::Result<Connection>>,
}

/// The gRPC servers of this process by port.
static SERVERS: LazyLock<Mutex<HashMap<u16, LocalServer>>> = LazyLock::new(Default::default);

fn servers() -> MutexGuard<'static, HashMap<u16, LocalServer>> {
    SERVERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server's place in the registry, given up when dropped (the server stopped).
pub(crate) struct Registration {
    port: u16,
    accepted: mpsc::Sender<io::Result<Connection>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut servers = servers();
        // Only its own: a server started since on the freed port keeps its place.
        if servers
            .get(&self.port)
            .is_some_and(|server| server.accepted.same_channel(&self.accepted))
        {
            servers.remove(&self.port);
        }
    }
}

/// Lets callers in this process reach the server listening at `addr` through pipes
/// handed to `accepted`; `None` when `addr` is not one a loopback caller reaches.
pub(crate) fn register(
    addr: SocketAddr,
    identity: &Identity,
    accepted: mpsc::Sender<io::Result<Connection>>,
) -> Option<Registration> {
    let ip = addr.ip();
    if !(ip.is_loopback() || ip.is_unspecified()) {
        return None;
    }
    let server = LocalServer {
        identity: identity.clone(),
        accepted: accepted.clone(),
    };
    servers().insert(addr.port(), server);
    Some(Registration {
        port: addr.port(),
        accepted,
    })
}

/// A pipe to the server of this process at `host:port`, for `caller`; `None` when no
/// server of this process listens there, or a TLS handshake between the two would
/// fail (then the caller connects over the network, and fails there as it would).
pub(crate) async fn connect(host: &str, port: u16, caller: &Identity) -> Option<Connection> {
    let loopback = host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if !loopback {
        return None;
    }
    let (identity, accepted) = {
        let servers = servers();
        let server = servers.get(&port)?;
        (server.identity.clone(), server.accepted.clone())
    };
    let service = identity.accepts(caller, host)?;
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    let theirs = Connection {
        stream: Stream::Pipe(theirs),
        peer: PeerInfo {
            service: Some(service),
        },
    };
    accepted.send(Ok(theirs)).await.ok()?;
    Some(Connection {
        stream: Stream::Pipe(ours),
        peer: PeerInfo { service: None },
    })
}
