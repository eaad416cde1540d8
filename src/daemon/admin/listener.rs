//! The admin server's connections: every connection gets a deadline for its request head
//! (which also closes idle keep-alive connections), a deadline for each write the client does
//! not take, a deadline for a whole answer, bounded header sizes, and a cap on how many are
//! open at once. At the cap the oldest connection with no request in progress is closed at once
//! to make room (its socket too, whatever it has half sent), or, when every connection is busy,
//! the oldest busy one: a new connection (a probe) always gets in, and no client can hold more
//! than the cap of sockets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest request head accepted (hyper's read buffer; its minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted in a request.
const MAX_HEADERS: usize = 32;

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request head, counted from the connection's start or its last answer.
    pub header_read_timeout: Duration,
    /// Time a client may take none of an answer before it is cut off.
    pub write_timeout: Duration,
    /// Time a whole answer may take (a client that reads slowly but steadily).
    pub answer_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Open connections, oldest first, with whether each has a request in progress.
#[derive(Default)]
struct Registry {
    next_id: u64,
    open: BTreeMap<u64, Connection>,
}

struct Connection {
    in_flight: Arc<AtomicUsize>,
    close: CancellationToken,
}

impl Registry {
    /// Makes room for a new connection: at the cap, the oldest idle connection is told to
    /// close, or the oldest busy one when none is idle. Returns the new connection's id, its
    /// in-progress counter and its closing token, and whether a busy connection was closed.
    fn admit(&mut self, max: usize) -> (u64, Arc<AtomicUsize>, CancellationToken, Option<bool>) {
        let mut evicted = None;
        if self.open.len() >= max {
            let idle = self
                .open
                .iter()
                .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id);
            let victim = idle.or_else(|| self.open.keys().next().copied());
            if let Some(victim) = victim
                && let Some(connection) = self.open.remove(&victim)
            {
                connection.close.cancel();
                evicted = Some(idle.is_none());
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        self.open.insert(
            id,
            Connection {
                in_flight: in_flight.clone(),
                close: close.clone(),
            },
        );
        (id, in_flight, close, evicted)
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then lets open answers finish (each
/// bounded by the write timeout).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    closed: IntCounterVec,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let all_close = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: pause instead of spinning on the error.
                    tracing::warn!(%error, "the admin server could not accept a connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let (id, in_flight, close, evicted) = registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(limits.max_connections);
        if evicted == Some(true) {
            tracing::warn!(
                max_connections = limits.max_connections,
                "the admin server has every connection busy: the oldest was closed to let a new one in"
            );
        }
        let app = app.clone();
        let registry = registry.clone();
        let stopping = all_close.clone();
        let closed = closed.clone();
        tasks.spawn(async move {
            let ending = connection(stream, app, limits, in_flight, [close, stopping]).await;
            if let Some(reason) = ending {
                closed.with_label_values(&[reason]).inc();
            }
            registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
        });
    }
    all_close.cancel();
    let _ = tokio::time::timeout(limits.write_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

async fn connection(
    stream: TcpStream,
    app: axum::Router,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
    [evicted, stopping]: [CancellationToken; 2],
) -> Option<&'static str> {
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let answer_timeout = limits.answer_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let guard = Busy::enter(in_flight.clone());
        let mut app = app.clone();
        async move {
            let response = tower_service::Service::call(&mut app, request).await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    deadline: Box::pin(tokio::time::sleep(answer_timeout)),
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let reason = tokio::select! {
        result = conn.as_mut() => {
            return result.err().and_then(|error| {
                tracing::debug!(%error, "admin connection ended with an error");
                limit_behind(&error)
            });
        }
        // Evicted to make room: closed at once (dropping the connection closes the socket),
        // whatever the client has half sent or is still being answered.
        _ = evicted.cancelled() => return Some("evicted"),
        _ = stopping.cancelled() => None,
    };
    // Shutting down: an idle connection ends at once; an answer in progress may finish.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.write_timeout, conn).await;
    reason
}

/// Which limit, if any, ended a connection with `error`.
fn limit_behind(error: &hyper::Error) -> Option<&'static str> {
    if error.is_timeout() {
        return Some("header_timeout");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<AnswerTimedOut>().is_some() {
            return Some("answer_timeout");
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Some("write_timeout");
        }
        source = cause.source();
    }
    None
}

/// Counts a request as in progress until its answer's body is dropped (fully sent or abandoned).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(counter: Arc<AtomicUsize>) -> Busy {
        counter.fetch_add(1, Ordering::AcqRel);
        Busy(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its connection counted as busy while it is being sent, and
/// ends it (an error, so the client sees a broken answer, not a short one) once it has taken
/// longer than the answer timeout.
struct Tracked {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _guard: Busy,
}

/// The error that ends an answer that took too long.
#[derive(Debug)]
struct AnswerTimedOut;

impl std::fmt::Display for AnswerTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer took longer than [admin] answer_timeout")
    }
}

impl std::error::Error for AnswerTimedOut {}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(AnswerTimedOut))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose writes fail once the peer has taken nothing for `limit`: a client that stops
/// reading cannot hold an answer (and what produces it) open.
struct WriteDeadline {
    io: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(io: TcpStream, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's readiness through, failing it when the peer stalled past the limit.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client took nothing of the answer within the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room_else_the_oldest_busy_one() {
        let mut registry = Registry::default();
        let (first, first_busy, first_close, none) = registry.admit(3);
        assert_eq!(none, None);
        let (_, _, second_close, _) = registry.admit(3);
        let (_, third_busy, third_close, _) = registry.admit(3);
        first_busy.fetch_add(1, Ordering::AcqRel);
        // The first is busy: the second (the oldest idle) is closed.
        let (_, fourth_busy, _, evicted) = registry.admit(3);
        assert_eq!(evicted, Some(false));
        assert!(second_close.is_cancelled());
        assert!(!first_close.is_cancelled() && !third_close.is_cancelled());
        assert!(registry.open.contains_key(&first));
        // Every connection busy: the oldest busy one goes, and the newcomer gets in.
        third_busy.fetch_add(1, Ordering::AcqRel);
        fourth_busy.fetch_add(1, Ordering::AcqRel);
        let (newest, _, _, evicted) = registry.admit(3);
        assert_eq!(evicted, Some(true));
        assert!(first_close.is_cancelled());
        assert!(!registry.open.contains_key(&first));
        assert!(registry.open.contains_key(&newest));
        assert_eq!(registry.open.len(), 3);
    }
}
