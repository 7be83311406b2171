//! `serve`: a small HTTP/1.1 server (hyper) that runs the scripts under a root through the
//! engine, with URL paths mapped to scripts as nginx in front of the FastCGI mode would map
//! them. Meant for trying sidecars and developing scripts without a web server.
//!
//! It holds the limits a web server in front would ([`Limits`]): a cap on connections
//! (`admission`), header and body timeouts, the request body read in full on the async side
//! before the engine runs ([`upload`]), Host checked and the absolute-form's authority used
//! ([`host`]), and request heads too large to pass to a script refused with 431.
//!
//! Each request then runs the blocking engine on tokio's blocking pool, with nothing left to
//! wait for from the client; its response goes out through a bounded channel (`bridge`), so
//! memory stays flat. A client that leaves mid-response kills the script's process group.

mod admission;
mod bridge;
pub mod host;
mod limits;
pub mod route;
pub mod upload;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::backend::{AbortHandle, ErrorOutput};
use crate::engine::{Answer, Engine, FailureKind, Job, Outcome};
use crate::front_end::{self, log};
use crate::metrics::{self, Metrics};
use crate::request::Request;
use crate::response::ResponseHead;
use admission::Admission;
use bridge::{AbortOnDrop, ResponseBody};
use host::Target;
use limits::Enforced;
pub use limits::Limits;
use upload::{Upload, UploadError};

/// Requests in flight get this long to finish after Ctrl-C or SIGTERM; then their scripts are
/// killed (they run in their own process groups and would otherwise outlive the server).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long a request waits for a free script slot before 503 (as the FastCGI mode).
const SLOT_WAIT: Duration = Duration::from_secs(10);
/// Response headers that belong to one connection, which hyper manages (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Transfer-Encoding",
    "TE",
    "Trailer",
    "Upgrade",
];

/// `http-conditional serve` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scripts are looked up under this folder.
    pub root: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// Default script timeout in seconds.
    pub timeout: Option<f64>,
    /// FastCGI applications scripts are forwarded to.
    pub upstream: front_end::UpstreamOptions,
    /// `--rules FILE`: the site rules file, re-read on SIGHUP.
    pub rules: Option<PathBuf>,
    /// What clients may hold.
    pub limits: Limits,
    /// `--metrics HOST:PORT`: where Prometheus metrics are served.
    pub metrics: Option<String>,
}

/// What every request shares.
struct State {
    engine: Engine,
    /// The canonical root.
    root: PathBuf,
    timeout: Option<Duration>,
    base_env: Vec<(String, String)>,
    limits: Enforced,
    /// Scripts that may be running, killed if still running when the server stops.
    running: Mutex<HashMap<u64, AbortHandle>>,
    next_id: AtomicU64,
    /// What `--metrics` counts, when given.
    metrics: Option<Arc<Metrics>>,
}

impl State {
    fn register(&self, abort: AbortHandle) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_running().insert(id, abort);
        id
    }

    fn unregister(&self, id: u64) {
        self.lock_running().remove(&id);
    }

    fn in_flight(&self) -> usize {
        self.lock_running().len()
    }

    fn abort_all(&self) {
        for (_, abort) in self.lock_running().drain() {
            abort.abort();
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    let root = front_end::canonical_root(&options.root)?;
    let timeout = front_end::timeout_flag(options.timeout)?;
    let mut limits = options.limits.check()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let scripts = 4 * cpus;
    limits.max_connections = admission::fit_to_descriptors(limits.max_connections, scripts);
    let declarations = front_end::declarations(options.rules.as_deref())?;
    let engine = front_end::engine(
        vec![root.clone()],
        &declarations,
        front_end::backends(scripts, SLOT_WAIT, &options.upstream)?,
    );
    let metrics = options
        .metrics
        .as_ref()
        .map(|_| Arc::new(Metrics::new(&engine.backends)));
    let state = Arc::new(State {
        engine,
        root,
        timeout,
        base_env: front_end::base_env(),
        limits,
        running: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        metrics,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(
        Arc::clone(&state),
        &options.listen,
        options.metrics.as_deref(),
    ));
    state.abort_all();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.map(|()| ExitCode::SUCCESS)
}

async fn serve(state: Arc<State>, listen: &str, metrics: Option<&str>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    if let (Some(address), Some(counted)) = (metrics, &state.metrics) {
        metrics::listener::spawn(metrics::listener::bind(address).await?, Arc::clone(counted));
    }
    let local = listener.local_addr()?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    if let Some(declarations) = state.engine.loaded_declarations() {
        front_end::reload_rules_on_sighup(Arc::clone(declarations))?;
    }
    log(format_args!(
        "serving {} on http://{local}/ (Ctrl-C stops)",
        state.root.display()
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut admission = Admission::new(state.limits.max_connections);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    // Past the cap the stream is dropped here: closed at once.
                    if let Some(permit) = admission.admit() {
                        let state = Arc::clone(&state);
                        let stop = stop_rx.clone();
                        tokio::spawn(async move {
                            connection(stream, remote, state, stop).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    admission.accept_failed(&e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let in_flight = state.in_flight();
    if in_flight > 0 {
        log(format_args!(
            "stopping; {in_flight} request(s) get {} s to finish",
            SHUTDOWN_GRACE.as_secs()
        ));
    }
    tokio::select! {
        () = stop_tx.closed() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    state.abort_all();
    log(format_args!("stopped"));
    Ok(())
}

/// Serves one keep-alive connection until it closes or the server stops.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let header_timeout = state.limits.header_timeout;
    let service = service_fn(move |request| respond(Arc::clone(&state), request, local, remote));
    let mut builder = http1::Builder::new();
    // The header timeout also runs while a kept-alive connection waits for its next request,
    // so a silent client holds its connection for that long at most.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(limits::MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        // A client that leaves or stalls is routine; only say something about the rest.
        if !(e.is_incomplete_message() || e.is_canceled() || e.is_timeout() || e.is_closed()) {
            log(format_args!("connection from {remote}: {e}"));
        }
    }
}

/// Answers one request: check its head, route it, read its body in full, run the engine on
/// the blocking pool, stream its response.
async fn respond(
    state: Arc<State>,
    request: hyper::Request<Incoming>,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let in_flight = state.metrics.as_ref().map(|m| m.in_flight());
    let (parts, incoming) = request.into_parts();
    let line = LogLine {
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |pq| pq.to_string()),
        query: parts.uri.query().unwrap_or_default().to_string(),
        started,
        metrics: state.metrics.clone(),
    };
    let refused = |refusal: route::Refusal| {
        let text = format!("{} {}\n", refusal.status, refusal.reason);
        line.refused(
            refusal.status,
            &format!("refused: {}", refusal.reason),
            &text,
        );
        text_response(refusal.status, &text)
    };
    let host = match host::check(&parts.method, &parts.uri, parts.version, &parts.headers) {
        Ok(Target::Path { host }) => host,
        Ok(Target::ServerOptions) => {
            line.write(200, "OPTIONS * answered by the server", 0, true);
            return Ok(text_response(200, ""));
        }
        Err(refusal) => return Ok(refused(refusal)),
    };
    let located = match route::locate(&state.root, parts.uri.path().as_bytes()) {
        Ok(located) => located,
        Err(refusal) => return Ok(refused(refusal)),
    };
    let body = match upload::read(incoming, state.limits.body).await {
        Ok(body) => body,
        Err(e) => return Ok(upload_failed(&line, &e)),
    };
    let vars = route::cgi_vars(
        &state.root,
        &located,
        &route::Incoming {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            host: host.as_deref(),
            content_length: body.content_length(),
            local,
            remote,
        },
    );
    let request = Request::new(vars);
    // A declared 304 or 412 is answered here, on the connection's task: no blocking thread.
    if let Some(answer) =
        state
            .engine
            .answer_without_running(&job(&state, &request, located.script.clone()))
    {
        let outcome = answer.outcome;
        line.count(&outcome);
        line.write(
            outcome.status,
            &outcome.answer.to_string(),
            outcome.body_bytes,
            outcome.complete,
        );
        return Ok(hyper_response(
            &answer.head,
            ResponseBody::fixed(answer.body),
        ));
    }
    let (sink, pending) = bridge::response_channel(tokio::runtime::Handle::current());
    let abort = AbortHandle::new();
    let guard = AbortOnDrop::new(abort.clone());
    let id = state.register(abort.clone());
    let worker_state = Arc::clone(&state);
    let worker_line = line.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let outcome = run_engine(
            &worker_state,
            request,
            located,
            body,
            &abort,
            sink,
            &worker_line,
        );
        worker_state.unregister(id);
        outcome
    });
    let Ok(head) = pending.head.await else {
        // The engine ended without a head: it panicked. Nothing is running any more.
        guard.disarm();
        let text = "500 internal error\n";
        match worker.await {
            // Counted by the worker already.
            Ok(outcome) => line.write(500, &outcome.answer.to_string(), text.len() as u64, true),
            Err(e) => line.refused(500, &format!("internal error: {e}"), text),
        }
        state.unregister(id);
        return Ok(text_response(500, text));
    };
    let abort = guard.disarm();
    // Without a body to send, hyper drops it unpolled: then its drop must not kill the script
    // (a HEAD still drains the script's output).
    let bodiless = parts.method == Method::HEAD || matches!(head.status, 100..=199 | 204 | 304);
    let body = ResponseBody::streamed(
        pending.body,
        pending.complete,
        if bodiless { AbortHandle::new() } else { abort },
    );
    tokio::spawn(async move {
        let outcome = worker.await.unwrap_or_else(|_| {
            let failed = Outcome {
                complete: false,
                ..Outcome::bodiless(500, Answer::Failed(FailureKind::Internal))
            };
            line.count(&failed);
            failed
        });
        drop(in_flight);
        line.write(
            outcome.status,
            &outcome.answer.to_string(),
            outcome.body_bytes,
            outcome.complete,
        );
    });
    Ok(hyper_response(&head, body))
}

/// The engine's part of a request, on a blocking thread: nothing in it waits for the client
/// (the body is already read; the response channel has its own send timeout).
fn run_engine(
    state: &State,
    request: Request,
    located: route::Located,
    mut body: Upload,
    abort: &AbortHandle,
    mut sink: bridge::ChannelSink,
    line: &LogLine,
) -> Outcome {
    let errors = ErrorOutput::prefixed(&String::from_utf8_lossy(&located.script_name));
    let job = job(state, &request, located.script);
    let outcome = state
        .engine
        .handle(&job, &mut body, &errors, abort, &mut sink);
    // Counted before the body ends, so a client that has its response sees it counted.
    line.count(&outcome);
    if outcome.complete {
        // Only now may the body end cleanly; dropped without this, it ends in an error.
        sink.complete();
    }
    outcome
}

/// The engine's job for `request`, which names `script`.
fn job<'a>(state: &State, request: &'a Request, script: PathBuf) -> Job<'a> {
    Job {
        request,
        script: Some(script),
        interpreter: None,
        timeout: state.timeout,
        base_env: state.base_env.clone(),
    }
}

/// The answer to a body that could not be read in full. The connection closes after it: what
/// is left of the body is still on the wire. (A client that broke off reads nothing of it.)
fn upload_failed(line: &LogLine, error: &UploadError) -> hyper::Response<ResponseBody> {
    let status = error.status();
    let text = format!("{status} {error}\n");
    line.refused(status, &format!("refused: {error}"), &text);
    let mut response = text_response(status, &text);
    response
        .headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// One request's access-log line (method, target, status, decision, body bytes, duration) and
/// its count in the metrics.
#[derive(Clone)]
struct LogLine {
    method: Method,
    target: String,
    query: String,
    started: Instant,
    metrics: Option<Arc<Metrics>>,
}

impl LogLine {
    fn write(&self, status: u16, decision: &str, bytes: u64, complete: bool) {
        crate::log::access(&crate::log::Access {
            method: self.method.as_str(),
            target: &self.target,
            status,
            decision,
            bytes,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            complete,
        });
    }

    /// Counts the engine's answer in the metrics.
    fn count(&self, outcome: &Outcome) {
        if let Some(metrics) = &self.metrics {
            metrics.record(outcome, self.started.elapsed(), &self.query);
        }
    }

    /// An answer given before or without the engine (`text` its body): logged, and counted
    /// as failed (not_found for a 404, refused for the rest).
    fn refused(&self, status: u16, decision: &str, text: &str) {
        let bytes = text.len() as u64;
        self.write(status, decision, bytes, true);
        let kind = match status {
            404 => FailureKind::NotFound,
            500 => FailureKind::Internal,
            _ => FailureKind::Refused,
        };
        self.count(&Outcome {
            body_bytes: bytes,
            ..Outcome::bodiless(status, Answer::Failed(kind))
        });
    }
}

/// A short plain-text response that never reached the engine, with the head the engine
/// gives its own text answers.
fn text_response(status: u16, text: &str) -> hyper::Response<ResponseBody> {
    let (head, body) = front_end::text_answer(status, text);
    hyper_response(&head, ResponseBody::fixed(body))
}

/// The engine's response head as hyper's, less hop-by-hop headers hyper manages itself.
fn hyper_response(head: &ResponseHead, body: ResponseBody) -> hyper::Response<ResponseBody> {
    let mut response = hyper::Response::new(body);
    // Only a final status of RFC 9110 §15 leaves: 1xx here would be read as interim (101 as a
    // protocol switch), and codes past 599 are not HTTP.
    let status = match head.status {
        200..=599 => StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY),
        _ => StatusCode::BAD_GATEWAY,
    };
    *response.status_mut() = status;
    if !head.reason.is_empty()
        && status.canonical_reason() != Some(head.reason.as_str())
        && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason.as_bytes())
    {
        response.extensions_mut().insert(reason);
    }
    let headers = response.headers_mut();
    for (name, value) in &head.headers {
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => log(format_args!("dropped an invalid response header {name:?}")),
        }
    }
    response
}
