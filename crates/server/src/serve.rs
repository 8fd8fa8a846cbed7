//! The connection loop: plain HTTP or TLS (rustls), HTTP/1.1 and HTTP/2 (hyper-util's auto
//! builder), a bounded time to read a request head (slowloris) and to finish a TLS handshake,
//! the peer address handed to handlers (`ConnectInfo<SocketAddr>`, for the per-IP rate limit),
//! and a graceful shutdown that finishes the requests in flight.
//!
//! Connections that never end (issue 13, finding 2): every connection has a watchdog that
//! closes it when no request has started within `header_read_timeout` of the accept (an
//! HTTP/2 client that sends only the preface, or a client that sends nothing), and when it
//! has had no request in flight and no byte moving for `idle_timeout` (HTTP/1 keep-alive and
//! HTTP/2 alike); a response body being sent (an alarm stream) counts as a request in flight.
//! At most `max_connections` connections are served normally; the next [`headroom`] ones are
//! served one request each with a short deadline ([`OVERFLOW_DEADLINE`]), so a health check or
//! an operator still gets an answer while idle sockets hold the cap; past that a connection is
//! closed as soon as it is accepted. Connections already open (agents) are never refused.
//! Refused and timed-out connections are counted in `procwatch_limit_breaches_total`
//! (`connection_limit`, `first_request_timeout`, `idle_timeout`), and the open ones in
//! `procwatch_connections_open`.
//!
//! TLS: [`tls_config`] loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
//! SEC1) into a rustls server config (ring provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read as PEM.
    #[error("cannot read the TLS certificate {path}: {source}")]
    Cert {
        /// The certificate file's path.
        path: String,
        /// Why it could not be read.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCert(String),
    /// The private key file could not be read as PEM.
    #[error("cannot read the TLS private key {path}: {source}")]
    Key {
        /// The key file's path.
        path: String,
        /// Why it could not be read.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the certificate or the key.
    #[error("invalid TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server config from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert { path: cert.display().to_string(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| TlsError::Key { path: key.display().to_string(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Settings of the connection loop.
#[derive(Clone)]
pub struct ConnOptions {
    /// TLS settings; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a connection may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Where connection counts and errors are reported.
    pub metrics: Arc<Metrics>,
    /// No request in flight and no byte moving for this long closes a connection.
    pub idle_timeout: Duration,
    /// Connections served normally at most (see the module doc).
    pub max_connections: usize,
}

/// Connections served past `max_connections`, one short request each.
pub fn headroom(max_connections: usize) -> usize {
    (max_connections / 16).clamp(4, 64)
}

/// The time a connection past `max_connections` has for its one request.
pub const OVERFLOW_DEADLINE: Duration = Duration::from_secs(2);

/// What a connection's watchdog watches.
#[derive(Default)]
struct Activity {
    /// Bytes read and written.
    moved: AtomicU64,
    /// Requests started.
    started: AtomicU64,
    /// Requests whose response (body included) is not finished.
    inflight: AtomicUsize,
}

/// Completes with the reason when the connection must be closed (see the module doc). Reads
/// no clock: it counts quiet ticks of a quarter of `idle`.
async fn watchdog(act: Arc<Activity>, first: Duration, idle: Duration) -> &'static str {
    tokio::time::sleep(first).await;
    if act.started.load(Ordering::Relaxed) == 0 {
        return "first_request_timeout";
    }
    let tick = (idle / 4).max(Duration::from_millis(10));
    let mut last = act.moved.load(Ordering::Relaxed);
    let mut quiet = 0;
    loop {
        tokio::time::sleep(tick).await;
        let moved = act.moved.load(Ordering::Relaxed);
        if act.inflight.load(Ordering::Relaxed) > 0 || moved != last {
            (last, quiet) = (moved, 0);
            continue;
        }
        quiet += 1;
        if quiet >= 4 {
            return "idle_timeout";
        }
    }
}

/// Decrements a connection's requests in flight when dropped (the response body is done).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until it is finished or dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Decrements the open-connection count when the connection's task ends.
struct OpenConn {
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        let n = self.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.metrics.set_connections_open(n);
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the connections to
/// finish their requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    opts: ConnOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    // Past the cap: one request, a short deadline, no keep-alive.
    let mut overflow_builder = auto::Builder::new(TokioExecutor::new());
    overflow_builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(OVERFLOW_DEADLINE.min(opts.header_read_timeout));
    overflow_builder.http2().timer(TokioTimer::new()).max_concurrent_streams(1);
    let open = Arc::new(AtomicUsize::new(0));
    let (max, extra) = (opts.max_connections, headroom(opts.max_connections));
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(message = "Accept failed.", %error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let n = open.load(Ordering::Relaxed);
        if n >= max + extra {
            // Closed at once: the fd is freed and the client sees the refusal.
            opts.metrics.limit_breach("connection_limit");
            drop(stream);
            continue;
        }
        let overflow = n >= max;
        if overflow {
            opts.metrics.limit_breach("connection_limit");
        }
        opts.metrics.set_connections_open(open.fetch_add(1, Ordering::Relaxed) + 1);
        let counted = OpenConn { open: open.clone(), metrics: opts.metrics.clone() };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let progress = Arc::new(Progress::default());
        let seen = progress.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let seen = seen.clone();
            seen.activity.started.fetch_add(1, Ordering::Relaxed);
            seen.activity.inflight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(seen.activity.clone());
            let call = app.clone().oneshot(req);
            async move {
                let resp = call.await;
                seen.answered.store(seen.read.load(Ordering::Relaxed), Ordering::Relaxed);
                resp.map(|r| {
                    r.map(|inner| axum::body::Body::new(TrackedBody { inner, _guard: guard }))
                })
            }
        });
        let (first, idle) = if overflow {
            (OVERFLOW_DEADLINE.min(opts.header_read_timeout), OVERFLOW_DEADLINE)
        } else {
            (opts.header_read_timeout, opts.idle_timeout)
        };
        let dog = watchdog(progress.activity.clone(), first, idle);
        let watched = progress.clone();
        let stream = Counted { inner: stream, progress: progress.clone() };
        let builder = if overflow { overflow_builder.clone() } else { builder.clone() };
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let _counted = counted;
            let tls_metrics = opts.metrics.clone();
            let serve = async move {
                match acceptor {
                    Some(acceptor) => {
                        let hs = tokio::time::timeout(first, acceptor.accept(stream));
                        match hs.await {
                            Ok(Ok(tls)) => {
                                let conn =
                                    builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                                watcher.watch(conn.into_owned()).await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(message = "TLS handshake failed.", %peer, %error);
                                Ok(())
                            }
                            Err(_) => {
                                tls_metrics.limit_breach("tls_handshake");
                                Ok(())
                            }
                        }
                    }
                    None => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            let result = tokio::select! {
                r = serve => r,
                reason = dog => {
                    // A head that started to arrive is a slow head (as hyper's own timeout
                    // would count it), not a silent client.
                    let partial = watched.read.load(Ordering::Relaxed)
                        > watched.answered.load(Ordering::Relaxed);
                    let reason = if reason == "first_request_timeout" && partial {
                        "header_timeout"
                    } else {
                        reason
                    };
                    // Dropping the connection closes the socket.
                    opts.metrics.limit_breach(reason);
                    tracing::debug!(message = "Connection closed.", %peer, reason);
                    return;
                }
            };
            if let Err(error) = result {
                // hyper's head timeout also ends idle keep-alive connections: only a head that
                // started to arrive (bytes read since the last answer) is a slow client.
                let partial = progress.read.load(Ordering::Relaxed)
                    > progress.answered.load(Ordering::Relaxed);
                if is_header_timeout(&*error) && partial {
                    opts.metrics.limit_breach("header_timeout");
                    tracing::debug!(message = "Request head not read in time.", %peer);
                } else {
                    tracing::debug!(message = "Connection ended with an error.", %peer, %error);
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Bytes read on a connection, and how many had been read when the last answer was made.
#[derive(Default)]
struct Progress {
    read: AtomicU64,
    answered: AtomicU64,
    activity: Arc<Activity>,
}

/// A stream that counts the bytes read from it.
struct Counted<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.progress.read.fetch_add(n as u64, Ordering::Relaxed);
            self.progress.activity.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.progress.activity.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.progress.activity.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
