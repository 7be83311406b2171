//! `serve`: a small HTTP/1.1 server running scripts under a root through the engine.

use std::path::PathBuf;
use std::process::ExitCode;

/// `http-conditional serve` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scripts are looked up under this folder.
    pub root: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// Default script timeout in seconds.
    pub timeout: Option<f64>,
}

/// Serves until Ctrl-C.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    anyhow::bail!("serve is not built yet ({options:?})")
}
