//! FastCGI mode: a long-running responder (FastCGI 1.0) over the same engine as CGI mode.
//!
//! The record layer is ours ([`codec`]): the published crates buffer whole request bodies,
//! cannot see FCGI_ABORT_REQUEST while a response is produced, lose param bytes, or panic on
//! input from the socket (see docs/fastcgi.md). The pieces:
//! - [`listener`]: `--listen unix:PATH`, `--listen HOST:PORT` or the socket inherited as fd 0,
//!   and the accept loop (connection cap, back-off on EMFILE, graceful stop);
//! - [`connection`]: one task per connection, reading records while the script runs, so an
//!   abort or a closed connection kills the script at once;
//! - [`request`]: the adapters that hand one request to the synchronous engine on a blocking
//!   thread (params → `Request`, FCGI_STDIN → streamed body, sink → FCGI_STDOUT), or run a
//!   forwarded GET's php-fpm exchange on a task and finish it there.

pub mod codec;
pub mod connection;
pub mod listener;
pub mod privileges;
mod records;
pub mod request;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::engine::Engine;
use crate::front_end::{self, log};
use crate::metrics::{self, Metrics};

pub use listener::Listener;

/// `http-conditional fastcgi` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only scripts whose real path lies under one of these folders run (`--root`, repeated).
    pub roots: Vec<PathBuf>,
    /// `--user USER[:GROUP]`: the account scripts run as (required when started as root).
    pub user: Option<String>,
    /// `--socket-group GROUP`: the group of the unix socket created (the web server's).
    pub socket_group: Option<String>,
    /// `unix:/path.sock` or `HOST:PORT`; `None` means the listening socket inherited as fd 0.
    pub listen: Option<String>,
    /// Scripts running at once (default 4 × CPUs).
    pub max_children: Option<usize>,
    /// Seconds a request waits for a slot before 503.
    pub queue_timeout: f64,
    /// Default script timeout in seconds (the sidecar's `timeout` wins).
    pub timeout: Option<f64>,
    /// FastCGI applications scripts are forwarded to.
    pub upstream: front_end::UpstreamOptions,
    /// `--rules FILE`: the site rules file, re-read on SIGHUP.
    pub rules: Option<PathBuf>,
    /// `--metrics HOST:PORT`: where Prometheus metrics are served.
    pub metrics: Option<String>,
}

/// Bounds on what one peer may hold; each has a clear outcome when exceeded.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are accepted and closed at once (nginx answers 502)
    /// rather than left in the backlog where nothing tells anyone why they hang.
    pub max_connections: usize,
    /// Bytes of FCGI_PARAMS per request (names, values and length prefixes); more gets 431.
    /// nginx never sends more than one 64 KiB record, so 1 MiB is generous.
    pub params_bytes: usize,
    /// Time from a connection's first byte wait (or a BEGIN_REQUEST) until the params are all
    /// in; guards against peers that open connections and trickle.
    pub header_timeout: Duration,
    /// Time an idle kept-alive connection stays open. Longer than nginx's upstream
    /// `keepalive_timeout` (60 s) so nginx, not us, closes first and never races a new request.
    pub idle_timeout: Duration,
    /// Longest pause between FCGI_STDIN records while the body is still expected.
    pub body_timeout: Duration,
    /// Longest a write of response records may block on a peer that does not read.
    pub write_timeout: Duration,
    /// FCGI_STDIN records queued ahead of the script's stdin (each ≤ 64 KiB): the
    /// back-pressure window that keeps memory flat whatever the upload size.
    pub stdin_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            params_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            stdin_queue: 8,
        }
    }
}

/// What every connection shares: the engine and how jobs are built.
#[derive(Debug, Clone)]
pub struct Service {
    /// The engine, with `root` and `slots` set.
    pub engine: Engine,
    /// `--timeout`, for `Job.timeout`.
    pub timeout: Option<Duration>,
    /// Variables scripts get when the params lack them (PATH from the daemon's environment).
    pub base_env: Vec<(String, String)>,
    /// Scripts running at once (`--max-children`), reported as FCGI_MAX_REQS.
    pub max_children: usize,
    /// Connection and request limits.
    pub limits: Limits,
    /// What `--metrics` counts, when given.
    pub metrics: Option<Arc<Metrics>>,
}

impl Service {
    /// The service for `options`: canonical roots, slots, the daemon's PATH. An invalid
    /// `--root`, `--timeout` or `--queue-timeout` is an error at start-up.
    pub fn new(options: &Options, limits: Limits) -> anyhow::Result<Service> {
        anyhow::ensure!(!options.roots.is_empty(), "--root is required");
        let roots = options
            .roots
            .iter()
            .map(|root| front_end::canonical_root(root))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let timeout = front_end::timeout_flag(options.timeout)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // `Slots` runs at least one script at a time whatever it is asked.
        let max_children = options.max_children.unwrap_or(4 * cpus).max(1);
        let queue_timeout = Duration::try_from_secs_f64(options.queue_timeout)
            .context("--queue-timeout must be a non-negative number of seconds")?;
        let engine = front_end::engine(
            roots,
            &front_end::declarations(options.rules.as_deref())?,
            front_end::backends(max_children, queue_timeout, &options.upstream)?,
        );
        let metrics = options
            .metrics
            .as_ref()
            .map(|_| Arc::new(Metrics::new(&engine.backends)));
        Ok(Service {
            engine,
            timeout,
            base_env: front_end::base_env(),
            max_children,
            limits,
            metrics,
        })
    }
}

/// Runs the responder until SIGTERM or SIGINT, then lets requests in flight finish.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    let limits = Limits::default();
    let service = Arc::new(Service::new(&options, limits.clone())?);
    let privileges =
        privileges::Privileges::resolve(options.user.as_deref(), options.socket_group.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // One blocking thread per request, and a connection carries one request at a time.
        .max_blocking_threads(limits.max_connections + 16)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let listener = match &options.listen {
            Some(spec) => Listener::bind(spec, &privileges)?,
            None => Listener::inherited()?,
        };
        let metrics_listener = match &options.metrics {
            Some(address) => Some(metrics::listener::bind(address).await?),
            None => None,
        };
        privileges.drop_root()?;
        // SIGHUP re-reads the rules as the account scripts run as: a file it cannot read would
        // load now (as root) and then never reload. Refuse it at start instead.
        if let Some(declarations) = service.engine.loaded_declarations() {
            declarations.reload().map_err(|e| {
                anyhow::anyhow!("--rules must be readable by the --user account (SIGHUP re-reads it as that user):\n{e}")
            })?;
        }
        if let (Some(listener), Some(metrics)) = (metrics_listener, &service.metrics) {
            metrics::listener::spawn(listener, Arc::clone(metrics));
        }
        let roots: Vec<String> = service
            .engine
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        log(format_args!(
            "FastCGI responder on {} (root {})",
            listener.describe(),
            roots.join(", ")
        ));
        // Registered before the first accept, so an early SIGTERM is a clean stop too.
        let term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        if let Some(declarations) = service.engine.loaded_declarations() {
            front_end::reload_rules_on_sighup(Arc::clone(declarations))?;
        }
        let (stop, stopped) = watch::channel(Stop::Running);
        let signals = tokio::spawn(watch_stop_signals(term, int, stop));
        serve(listener, service, stopped).await;
        signals.abort();
        log("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// How far the responder is in stopping; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Serving.
    Running,
    /// SIGTERM or SIGINT: accept nothing new, close idle connections, let requests in flight
    /// finish.
    Draining,
    /// A second signal: kill the scripts still running and close every connection.
    Killing,
}

/// Serves connections from `listener` until `stop` leaves [`Stop::Running`]; then stops
/// accepting (a unix socket file is removed), closes idle connections, and returns once every
/// request in flight has been answered (or killed, at [`Stop::Killing`]).
pub async fn serve(listener: Listener, service: Arc<Service>, stop: watch::Receiver<Stop>) {
    let max = service.limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    listener::accept_loop(&listener, &service, &permits, stop).await;
    drop(listener);
    // Every connection task holds one permit until its last request is done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// First SIGTERM or SIGINT: drain. A second one: kill what still runs.
async fn watch_stop_signals(mut term: Signal, mut int: Signal, stop: watch::Sender<Stop>) {
    for phase in [Stop::Draining, Stop::Killing] {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        match phase {
            Stop::Draining => {
                log("stopping: finishing requests in flight (signal again to kill them)");
            }
            _ => log("killing the scripts still running"),
        }
        let _ = stop.send(phase);
    }
}

#[cfg(test)]
mod tests;
