//! The Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.1 on `[metrics] listen`.
//!
//! A scraper is one trusted process, so this is small: a connection from an address `allow`
//! does not cover is closed unread; a request head must arrive within `HEADER_TIMEOUT` and a
//! connection idle for `IDLE_TIMEOUT` is closed. At most `MAX_CONNECTIONS` are open at once: a
//! newcomer over it closes the oldest connection not serving a request, so connections held
//! open without asking (any local user can open them to loopback) cannot keep Prometheus out.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

use super::{Metrics, MetricsSettings};

const MAX_CONNECTIONS: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// OpenMetrics, which Prometheus asks for first and prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` until `shutdown` is cancelled.
pub async fn serve(metrics: Arc<Metrics>, settings: MetricsSettings, listener: TcpListener, shutdown: CancellationToken) {
    let open = Arc::new(Connections::default());
    let mut refused_said = false;
    let mut displaced_said = false;
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !settings.allows(peer.ip()) {
            if !refused_said {
                tracing::warn!(%peer, "metrics: a scrape from an address [metrics] allow does not cover was refused (said once)");
                refused_said = true;
            }
            continue;
        }
        let Some((place, displaced)) = open.admit() else { continue };
        if displaced && !displaced_said {
            tracing::warn!(%peer, "metrics: {MAX_CONNECTIONS} connections were open, the oldest idle one was closed to make room (said once)");
            displaced_said = true;
        }
        let (metrics, shutdown, open) = (Arc::clone(&metrics), shutdown.clone(), Arc::clone(&open));
        tokio::spawn(async move {
            let mut io = TimeoutStream::new(stream);
            io.set_read_timeout(Some(IDLE_TIMEOUT));
            io.set_write_timeout(Some(IDLE_TIMEOUT));
            let serving = Arc::clone(&place);
            let service = hyper::service::service_fn(move |request| {
                let (metrics, serving) = (Arc::clone(&metrics), Arc::clone(&serving));
                async move {
                    serving.serving.store(true, Ordering::Relaxed);
                    let response = answer(metrics, request).await;
                    serving.serving.store(false, Ordering::Relaxed);
                    response
                }
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(16 * 1024);
            let connection = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
            tokio::select! {
                result = connection => if let Err(e) = result { tracing::debug!(%peer, error = %e, "metrics: connection closed") },
                () = place.close.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
            open.leave(&place);
        });
    }
}

/// One open connection.
struct Place {
    since: Instant,
    /// While a request is being answered: such a connection is not closed to make room.
    serving: AtomicBool,
    close: CancellationToken,
}

#[derive(Default)]
struct Connections {
    open: Mutex<Vec<Arc<Place>>>,
}

impl Connections {
    /// A place for a new connection, and whether an idle one was closed for it; `None` if
    /// every open connection is serving a request.
    fn admit(&self) -> Option<(Arc<Place>, bool)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut displaced = false;
        if open.len() >= MAX_CONNECTIONS {
            let oldest_idle = open.iter().enumerate().filter(|(_, p)| !p.serving.load(Ordering::Relaxed)).min_by_key(|(_, p)| p.since)?.0;
            open.swap_remove(oldest_idle).close.cancel();
            displaced = true;
        }
        let place = Arc::new(Place { since: Instant::now(), serving: AtomicBool::new(false), close: CancellationToken::new() });
        open.push(Arc::clone(&place));
        Some((place, displaced))
    }

    fn leave(&self, place: &Arc<Place>) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| !Arc::ptr_eq(p, place));
    }
}

async fn answer(metrics: Arc<Metrics>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
        response
    };
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => response(StatusCode::OK, CONTENT_TYPE, metrics.render()),
        (_, "/metrics") => response(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "GET only\n".into()),
        _ => response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "radmfa serves its metrics at /metrics\n".into()),
    })
}
