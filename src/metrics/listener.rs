//! The `--metrics` listener: a tiny HTTP/1.1 server (hyper) of its own, apart from the
//! requests it counts, answering `GET /metrics` (and HEAD) with the exposition and anything
//! else with 404. A scrape never waits for a script: it only reads counters.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{Exposition, Metrics};
use crate::log;

/// The exposition's media type (OpenMetrics 1.0, which Prometheus asks for first).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's media type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A scraper that sends no request head within this time is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `--metrics HOST:PORT`: an error at start-up when the address cannot be had.
pub async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("--metrics: cannot listen on {address}"))
}

/// Serves the exposition on `listener` until the runtime stops. Must run inside the runtime.
pub fn spawn(listener: TcpListener, metrics: Arc<Metrics>) {
    if let Ok(local) = listener.local_addr() {
        log::line(&format!("metrics on http://{local}/metrics"));
    }
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::line(&format!("metrics: accept failed: {e}"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
                });
                // A scraper that leaves mid-answer is no news.
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The exposition for `GET /metrics`, 404 for any other path, 405 for other methods there.
fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let format = negotiate(request.headers().get(hyper::header::ACCEPT));
    let mut response = Response::new(Full::new(Bytes::from(metrics.render(format))));
    let media_type = match format {
        Exposition::OpenMetrics => CONTENT_TYPE_OPENMETRICS,
        Exposition::PrometheusText => CONTENT_TYPE_TEXT,
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    response
}

/// OpenMetrics when the scraper accepts it (Prometheus does), else the Prometheus text
/// format, as the Go client library chooses.
pub fn negotiate(accept: Option<&HeaderValue>) -> Exposition {
    let wants_openmetrics = accept.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|range| {
            let mut params = range.split(';').map(str::trim);
            params.next() == Some("application/openmetrics-text")
                && !params.any(|p| p.replace(' ', "") == "q=0")
        })
    });
    match wants_openmetrics {
        true => Exposition::OpenMetrics,
        false => Exposition::PrometheusText,
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
