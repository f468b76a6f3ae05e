//! The HTTP server loop: accepts connections up to `http.max_connections`, serves each with
//! hyper, and drains them on shutdown. Past the cap new connections wait in the listen
//! backlog, so wagate never runs out of descriptors and answers again as soon as a connection
//! closes.
//!
//! Each connection has two clocks of its own (hyper has one, which starts as soon as a
//! connection waits for its next request, so it cannot tell a slow client from an idle one):
//! a request's headers must arrive within `header_timeout` of its first byte (or of the
//! connect), and a connection with no request and no traffic closes after `keep_alive`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// How long to wait before accepting again after `accept` failed (e.g. out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub keep_alive: Duration,
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops accepting and waits up
/// to `drain` for open connections to finish their requests.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(Clock::new(limits));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .serve_connection(
                TokioIo::new(Watched::new(stream, clock.clone())),
                TowerToHyperService::new(Counted {
                    inner: service.clone(),
                    clock,
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections were still open after the drain period");
    }
}

/// Where a connection is between its requests.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for a request's headers, which must be complete by then.
    Head { by: Instant },
    /// This many requests are being handled.
    Serving(usize),
    /// No request since this moment (traffic, such as a stream's keep-alives, moves it on).
    Idle { since: Instant },
}

/// One connection's clocks, shared by its IO (which sees bytes) and its service (which sees
/// requests).
#[derive(Debug)]
struct Clock {
    phase: Mutex<Phase>,
    limits: Limits,
}

impl Clock {
    fn new(limits: Limits) -> Self {
        Self {
            phase: Mutex::new(Phase::Head {
                by: Instant::now() + limits.header_timeout,
            }),
            limits,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        f(&mut self.phase.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn request_started(&self) {
        self.with(|p| {
            *p = match *p {
                Phase::Serving(n) => Phase::Serving(n + 1),
                _ => Phase::Serving(1),
            }
        });
    }

    fn request_answered(&self) {
        self.with(|p| {
            *p = match *p {
                Phase::Serving(n) if n > 1 => Phase::Serving(n - 1),
                _ => Phase::Idle {
                    since: Instant::now(),
                },
            }
        });
    }

    /// Bytes came in: an idle connection has started its next request.
    fn read_some(&self) {
        let header_timeout = self.limits.header_timeout;
        self.with(|p| {
            if let Phase::Idle { .. } = p {
                *p = Phase::Head {
                    by: Instant::now() + header_timeout,
                };
            }
        });
    }

    /// Bytes went out: an idle connection is still in use (e.g. an event stream).
    fn wrote_some(&self) {
        self.with(|p| {
            if let Phase::Idle { since } = p {
                *since = Instant::now();
            }
        });
    }

    /// When the connection must be closed unless something happens first.
    fn deadline(&self) -> Option<Instant> {
        let keep_alive = self.limits.keep_alive;
        self.with(|p| match *p {
            Phase::Head { by } => Some(by),
            Phase::Serving(_) => None,
            Phase::Idle { since } => Some(since + keep_alive),
        })
    }
}

/// A connection's socket, closed by its [`Clock`].
struct Watched<T> {
    io: T,
    clock: Arc<Clock>,
    timer: Pin<Box<Sleep>>,
}

impl<T> Watched<T> {
    fn new(io: T, clock: Arc<Clock>) -> Self {
        Self {
            io,
            clock,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// Errors once the deadline passed; otherwise makes sure the task wakes up at it.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.clock.deadline() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request headers too slow, or idle too long",
            ));
        }
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        // Registers the waker; the deadline is in the future, so this is pending.
        let _ = self.timer.as_mut().poll(cx);
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.wrote_some();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.wrote_some();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The service, telling the connection's clock when a request starts and is answered.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    clock: Arc<Clock>,
}

/// Marks the request answered when dropped: also when hyper drops the future unfinished.
struct Answered(Arc<Clock>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.request_answered();
    }
}

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.clock.request_started();
        let answered = Answered(self.clock.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(answered);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(60),
        }
    }

    /// The deadline, as a distance from now (rounded to seconds).
    fn due_in(clock: &Clock) -> Option<u64> {
        clock.deadline().map(|d| {
            d.saturating_duration_since(Instant::now())
                .as_secs_f64()
                .round() as u64
        })
    }

    #[tokio::test]
    async fn the_clock_follows_requests_and_traffic() {
        let clock = Clock::new(limits());
        assert_eq!(
            due_in(&clock),
            Some(10),
            "the first request's headers are due"
        );
        clock.request_started();
        assert_eq!(due_in(&clock), None, "no clock while a request is handled");
        clock.request_answered();
        assert_eq!(due_in(&clock), Some(60), "idle: the keep-alive clock");
        clock.with(|p| {
            *p = Phase::Idle {
                since: Instant::now() - Duration::from_secs(30),
            }
        });
        assert_eq!(due_in(&clock), Some(30));
        clock.wrote_some();
        assert_eq!(due_in(&clock), Some(60), "traffic keeps an idle connection");
        clock.read_some();
        assert_eq!(due_in(&clock), Some(10), "a new request's headers are due");
        clock.request_started();
        clock.request_started();
        clock.request_answered();
        assert_eq!(due_in(&clock), None, "one of two requests still runs");
    }
}
