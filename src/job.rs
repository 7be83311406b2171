//! What a front end hands the engine for one request, and what it gets back: the types the
//! engine, its delivery and its launch share, kept in a leaf so imports point one way.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::Input;
pub use crate::failure::FailureKind;
use crate::preconditions::Rule;
use crate::request::Request;
use crate::script::Interpreter;

/// The request body as the front end holds it.
pub trait RequestBody {
    /// Reads and drops the whole body (answers given without running the script must still
    /// consume it: Apache mod_cgid truncates the response otherwise).
    fn discard(&mut self) -> io::Result<()>;
    /// Hands the body to the script.
    fn take_input(&mut self) -> Input;
}

/// One request for the engine.
pub struct Job<'a> {
    /// The CGI meta-variables.
    pub request: &'a Request,
    /// The script the front end chose; `None` when the request names none (404).
    pub script: Option<PathBuf>,
    /// An interpreter named on the command line (first in precedence).
    pub interpreter: Option<Interpreter>,
    /// `--timeout` (after the sidecar's `timeout`).
    pub timeout: Option<Duration>,
    /// Variables added to the script's environment when the request lacks them (PATH).
    pub base_env: Vec<(String, String)>,
}

/// How the engine answered one request: what the log line, `explain` and the metrics read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A declared script's 304 or 412, decided by `rule` without running it.
    WithoutRunning(Rule),
    /// The script ran and its response was passed on.
    Ran,
    /// A pass-through script ran, and its own validators then gave a 304 or 412 by `rule`.
    AfterRunning(Rule),
    /// The request failed (the contract's failure table).
    Failed(FailureKind),
}

impl Answer {
    /// A short name for metrics labels: `not_modified`, `precondition_failed`, `ran`,
    /// `passthrough_not_modified`, `passthrough_precondition_failed`, `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            Answer::WithoutRunning(rule) if rule.status() == Some(304) => "not_modified",
            Answer::WithoutRunning(_) => "precondition_failed",
            Answer::Ran => "ran",
            Answer::AfterRunning(rule) if rule.status() == Some(304) => "passthrough_not_modified",
            Answer::AfterRunning(_) => "passthrough_precondition_failed",
            Answer::Failed(_) => "failed",
        }
    }

    /// Whether the answer was given without running the page (a run avoided).
    pub fn avoided_a_run(&self) -> bool {
        matches!(self, Answer::WithoutRunning(_))
    }
}

impl fmt::Display for Answer {
    /// The decision as the access log writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::WithoutRunning(rule) => write!(f, "without running the script: {rule}"),
            Answer::Ran => f.write_str("ran script"),
            Answer::AfterRunning(rule) => write!(f, "after running the script: {rule}"),
            Answer::Failed(kind) => write!(f, "failed: {}", kind.label()),
        }
    }
}

/// Scripts started for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runs {
    /// The page itself (0 or 1).
    pub page: u32,
    /// Probe runs (the script with CONDITIONAL_PROBE=1, or the declaration's probe command).
    pub probes: u32,
    /// Probe answers reused from the `probe_ttl` cache or another request's run.
    pub probes_reused: u32,
    /// What ran them: `process` or `fastcgi`; `None` when nothing ran.
    pub backend: Option<&'static str>,
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status sent (or that would have been, when the client left).
    pub status: u16,
    /// How it was decided.
    pub answer: Answer,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// False when the response could not be completed after its head was sent.
    pub complete: bool,
    /// What ran for it.
    pub runs: Runs,
    /// The script's real path (symlinks resolved), once the engine found it: the metrics
    /// remember a full body's size per script and query for the bytes a later 304 saved.
    pub script: Option<PathBuf>,
}

impl Outcome {
    /// A complete answer of `status` with no body.
    pub fn bodiless(status: u16, answer: Answer) -> Outcome {
        Outcome {
            status,
            answer,
            body_bytes: 0,
            complete: true,
            runs: Runs::default(),
            script: None,
        }
    }
}
