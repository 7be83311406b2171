//! How a script runs. The engine asks a [`Backend`] to start one request and reads the CGI
//! response (RFC 3875 §6) from the [`ScriptRun`] it gets back, without knowing whether a child
//! process ([`process`]) or a FastCGI application already running, such as php-fpm
//! ([`fastcgi_client`]), produces it.

pub mod fastcgi_async;
pub mod fastcgi_client;
pub mod process;

pub use fastcgi_async::{Fetched, Prefetch};

use std::ffi::OsString;
use std::time::Duration;

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::failure::Failure;

/// Where the script's stdin comes from.
pub enum Input {
    /// The wrapper's own stdin (CGI mode: the server's body pipe or socket).
    Inherit,
    /// Nothing (probe runs).
    Null,
    /// Copied from a reader by a feeder thread (FastCGI, serve).
    Stream(Box<dyn Read + Send>),
}

/// Receives chunks of a script's stderr.
pub type StderrSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Where the script's stderr goes.
#[derive(Clone)]
pub enum ErrorOutput {
    /// The wrapper's own stderr (CGI mode: the server's error log).
    Inherit,
    /// Each chunk handed to a callback (FastCGI: FCGI_STDERR records; CGI mode and serve:
    /// [`ErrorOutput::prefixed`], log lines with the script's name).
    Capture(StderrSink),
}

/// Why reading from a running script stopped early.
#[derive(Debug)]
pub enum RunError {
    /// The deadline passed; the process group was killed.
    Timeout,
    /// The run was aborted from outside; the process group was killed.
    Aborted,
    /// Reading or polling failed.
    Io(io::Error),
}

/// Lets another thread stop a request's run (the client left, the server is stopping).
#[derive(Clone, Default)]
pub struct AbortHandle {
    inner: Arc<AbortState>,
}

/// What a run does when aborted (kill its process group, close its connection).
type AbortHook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct AbortState {
    aborted: AtomicBool,
    /// Set by the run in progress, cleared when it ends (so a reused process id is never
    /// signalled).
    hook: Mutex<Option<AbortHook>>,
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortHandle")
            .field("aborted", &self.is_aborted())
            .finish_non_exhaustive()
    }
}

impl AbortHandle {
    /// A handle for one request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run in progress now; a run started later sees `is_aborted` at once.
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::SeqCst);
        if let Some(hook) = self.lock_hook().as_ref() {
            hook();
        }
    }

    /// Whether `abort` was called.
    pub fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::SeqCst)
    }

    /// What `abort` does to the run in progress; `None` once it has ended.
    pub fn on_abort(&self, hook: Option<AbortHook>) {
        *self.lock_hook() = hook;
    }

    fn lock_hook(&self) -> std::sync::MutexGuard<'_, Option<AbortHook>> {
        self.inner.hook.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request for a backend.
pub struct ScriptCall<'a> {
    /// The script's complete CGI environment (FastCGI params, for an application).
    pub env: &'a [(OsString, OsString)],
    /// Time allowed from the start to the end of the response.
    pub timeout: Duration,
    /// The script's file name, for errors.
    pub script: &'a str,
}

/// How a run ended, once its output has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The script exited 0, or the application completed the request with status 0.
    Success,
    /// A non-zero exit or application status, a signal: the response is not to be trusted.
    Failed(String),
    /// The application refused the request (FastCGI `FCGI_OVERLOADED`, `FCGI_CANT_MPX_CONN`).
    Refused(String),
}

/// A started request: its CGI response on [`ScriptRun::read`], then how it ended.
pub trait ScriptRun: Send {
    /// Reads the next chunk of the CGI response; `Ok(0)` when it has ended.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, RunError>;
    /// Waits, within the deadline, for the run to end after its output has been read.
    fn wait(&mut self) -> Result<Ended, RunError>;
    /// Stops the run now (kills the process group, or aborts the application's request).
    fn kill(&mut self);
}

/// Something that can run a script: a program to execute, or an application to forward to.
pub trait Backend: Send + Sync {
    /// What it is, for metrics: `process` or `fastcgi`.
    fn kind(&self) -> &'static str;

    /// Starts one request with its body on `input`; the script's stderr goes to `errors`, and
    /// `abort` stops it from another thread.
    fn start(
        &self,
        call: &ScriptCall<'_>,
        input: Input,
        errors: &ErrorOutput,
        abort: &AbortHandle,
    ) -> Result<Box<dyn ScriptRun>, Failure>;

    /// What a front end needs to run this request itself on an async task, without a
    /// blocking thread, when the backend can (a FastCGI application and a bodiless GET or
    /// HEAD). `None` (the default, and every process) means [`Backend::start`].
    fn prefetch(&self, _call: &ScriptCall<'_>) -> Option<Prefetch> {
        None
    }
}

/// Reads a run's whole output, up to `limit` bytes (more is an error and stops the run).
pub fn read_to_end(run: &mut dyn ScriptRun, limit: usize) -> Result<Vec<u8>, RunError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = run.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            run.kill();
            return Err(RunError::Io(std::io::Error::other(format!(
                "more than {limit} bytes of output"
            ))));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

impl ErrorOutput {
    /// Passes on a chunk of the script's stderr.
    pub fn write(&self, chunk: &[u8]) {
        match self {
            ErrorOutput::Capture(sink) => sink(chunk),
            ErrorOutput::Inherit => {
                use std::io::Write;
                let _ = std::io::stderr().lock().write_all(chunk);
            }
        }
    }
}
