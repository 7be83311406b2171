//! `explain`: prints validators, conditions and the decision for a script, without running its body.

use std::path::PathBuf;
use std::process::ExitCode;

/// `http-conditional explain` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The script.
    pub script: PathBuf,
    /// Request headers, `Name: value`.
    pub headers: Vec<String>,
    /// Request method.
    pub method: String,
    /// Query string.
    pub query: String,
    /// JSON output.
    pub json: bool,
}

/// Prints the explanation.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    anyhow::bail!("explain is not built yet ({options:?})")
}
