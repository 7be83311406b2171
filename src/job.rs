//! What a front end hands the engine for one request, and what it gets back: the types the
//! engine, its delivery and its launch share, kept in a leaf so imports point one way.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::Input;
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

/// What happened, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status sent (or that would have been, when the client left).
    pub status: u16,
    /// How it was decided, e.g. `304 without running the script: RFC 9110 §13.2.2 step 3: ...`
    /// or `200 ran script`.
    pub summary: String,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// False when the response could not be completed after its head was sent.
    pub complete: bool,
}
