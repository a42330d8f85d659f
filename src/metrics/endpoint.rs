//! The Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.1 on `[metrics] listen`.
//!
//! A scraper is one trusted process, so this is small: a connection from an address `allow`
//! does not cover is closed unread; at most `MAX_CONNECTIONS` are open at once (more are closed
//! at once); a request head must arrive within `HEADER_TIMEOUT` and a connection idle for
//! `IDLE_TIMEOUT` is closed, so a slow peer holds nothing for long.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused_said = false;
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
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else { continue };
        let (metrics, shutdown) = (Arc::clone(&metrics), shutdown.clone());
        tokio::spawn(async move {
            let mut io = TimeoutStream::new(stream);
            io.set_read_timeout(Some(IDLE_TIMEOUT));
            io.set_write_timeout(Some(IDLE_TIMEOUT));
            let service = hyper::service::service_fn(move |request| answer(Arc::clone(&metrics), request));
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(16 * 1024);
            let connection = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
            tokio::select! {
                result = connection => if let Err(e) = result { tracing::debug!(%peer, error = %e, "metrics: connection closed") },
                () = shutdown.cancelled() => {}
            }
            drop(place);
        });
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
