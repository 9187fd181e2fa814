//! Clients that stop moving: a connection whose writes make no progress (the
//! client does not read what it asked for) and a request body that stops
//! arriving (a client sending a byte a minute) are given up after a timeout, so
//! neither holds a connection, a stream slot or a buffer forever.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body::Frame;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};

use crate::problem::Problem;

/// A timer armed while something waits and disarmed when it moves on.
struct Stall {
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: None,
        }
    }

    /// Records that the wait goes on: true once it lasted `timeout`.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }

    /// Records progress.
    fn moved(&mut self) {
        self.timer = None;
    }

    /// Passes `poll` through, failing it once it stayed pending for the timeout.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        what: &str,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} made no progress for {:?}", self.timeout),
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                self.moved();
                ready
            }
        }
    }
}

/// A connection whose writes fail once one made no progress for the timeout.
pub struct WriteTimeout<T> {
    inner: T,
    stall: Stall,
}

impl<T> WriteTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            stall: Stall::new(timeout),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.stall.watch(cx, poll, "a write")
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.stall.watch(cx, poll, "a write")
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.stall.watch(cx, poll, "a flush")
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.stall.watch(cx, poll, "a shutdown")
    }
}

/// A TCP listener whose connections give up writes that make no progress.
pub struct Listener {
    inner: TcpListener,
    send_timeout: Duration,
}

impl Listener {
    pub fn new(inner: TcpListener, send_timeout: Duration) -> Self {
        Self {
            inner,
            send_timeout,
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = WriteTimeout<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (WriteTimeout::new(tcp, self.send_timeout), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A request body that fails once no bytes arrived for the timeout while the
/// handler waited for them, and says so in `stalled`.
struct IdleBody {
    inner: Body,
    stall: Stall,
    stalled: Arc<AtomicBool>,
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending if this.stall.expired(cx) => {
                this.stalled.store(true, Ordering::Release);
                Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body stopped arriving",
                )))))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                this.stall.moved();
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Every request: a body that stops arriving for `timeout` ends the request with
/// `408 Request Timeout` (or `DEADLINE_EXCEEDED` for gRPC) and the connection.
pub async fn body_idle_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let stalled = Arc::new(AtomicBool::new(false));
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .filter(|value| value.as_bytes().starts_with(b"application/grpc"))
        .cloned();
    let request = request.map(|inner| {
        Body::new(IdleBody {
            inner,
            stall: Stall::new(timeout),
            stalled: stalled.clone(),
        })
    });
    let response = next.run(request).await;
    if !stalled.load(Ordering::Acquire) {
        return response;
    }
    tracing::info!(timeout = ?timeout, "request body stalled, closing the connection");
    let mut response = match grpc {
        Some(content_type) => {
            let mut response = tonic::Status::deadline_exceeded(format!(
                "the request body stopped arriving for {} s",
                timeout.as_secs()
            ))
            .into_http::<Body>();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            response
        }
        None => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!(
                "the request body stopped arriving for {} s",
                timeout.as_secs()
            ),
        )
        .into_response(),
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_timeout() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = WriteTimeout::new(near, Duration::from_secs(5));
        // Progress keeps the connection alive however long it takes.
        for _ in 0..4 {
            conn.write_all(&[0; 64]).await.expect("room");
            tokio::time::sleep(Duration::from_secs(4)).await;
            far.read_exact(&mut [0; 64]).await.expect("read");
        }
        conn.write_all(&[0; 64]).await.expect("room");
        let started = tokio::time::Instant::now();
        let err = conn.write_all(&[0; 64]).await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
