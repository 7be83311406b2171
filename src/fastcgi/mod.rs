//! FastCGI mode: a long-running responder (FastCGI 1.0) over the same engine as CGI mode.

pub mod codec;

use std::path::PathBuf;
use std::process::ExitCode;

/// `http-conditional fastcgi` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only scripts whose real path lies under this folder run.
    pub root: PathBuf,
    /// `unix:/path.sock` or `HOST:PORT`; `None` means the listening socket inherited as fd 0.
    pub listen: Option<String>,
    /// Scripts running at once (default 4 × CPUs).
    pub max_children: Option<usize>,
    /// Seconds a request waits for a slot before 503.
    pub queue_timeout: f64,
    /// Default script timeout in seconds (the sidecar's `timeout` wins).
    pub timeout: Option<f64>,
}

/// Runs the responder until SIGTERM.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    anyhow::bail!("fastcgi mode is not built yet ({options:?})")
}
