//! Everything that ends a request with an error status: the contract's failure table in one place.

use std::time::Duration;

/// Why a request could not be answered with the script's own response.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No script was named by the arguments or the CGI environment.
    #[error("no script to run: neither an argument, SCRIPT_FILENAME nor PATH_TRANSLATED names one")]
    NoScript,
    /// The script file does not exist.
    #[error("script not found: {0}")]
    ScriptMissing(String),
    /// The script's real path lies outside the document root.
    #[error("script outside the document root: {0}")]
    OutsideRoot(String),
    /// No interpreter and the script is not an executable file.
    #[error("script is not executable and no interpreter is configured: {0}")]
    NotExecutable(String),
    /// The script's shebang names the wrapper without an interpreter: running it would loop.
    #[error(
        "{0} names http-conditional in its shebang without an interpreter \
         (use '#!/usr/bin/http-conditional /bin/sh' or set an interpreter)"
    )]
    SelfShebang(String),
    /// The sidecar could not be read or parsed.
    #[error("bad sidecar {file}: {reason}")]
    BadSidecar {
        /// The sidecar's file name (not its full path).
        file: String,
        /// The I/O or JSON error.
        reason: String,
    },
    /// The site rules file could not be read or parsed (CGI mode reads it per request).
    #[error("bad rules file {file}: {reason}")]
    BadRules {
        /// The rules file's name (not its full path).
        file: String,
        /// The I/O or TOML error, with its line and column.
        reason: String,
    },
    /// The script or its interpreter could not be started.
    #[error("could not start {script}: {reason}")]
    SpawnFailed {
        /// The script's file name.
        script: String,
        /// The OS error.
        reason: String,
    },
    /// The script exited unsuccessfully before its response was complete.
    #[error("script {script} failed: {reason}")]
    ScriptFailed {
        /// The script's file name.
        script: String,
        /// Exit status or signal.
        reason: String,
    },
    /// The script's output did not start with a valid CGI header block.
    #[error("script {script} printed malformed CGI headers: {reason}")]
    MalformedHead {
        /// The script's file name.
        script: String,
        /// What was wrong.
        reason: String,
    },
    /// The probe run did not give a usable time.
    #[error("probe of {script} failed: {reason}")]
    ProbeFailed {
        /// The script's file name.
        script: String,
        /// What was wrong.
        reason: String,
    },
    /// The script ran past its timeout; its process group was killed.
    #[error("script {script} timed out after {after:?}")]
    Timeout {
        /// The script's file name.
        script: String,
        /// The timeout.
        after: Duration,
    },
    /// No slot to run a script became free in time (FastCGI --max-children).
    #[error("too many scripts running; no slot freed within {0:?}")]
    Overloaded(Duration),
    /// Reading the request body or writing the response failed: the client is gone.
    /// The upstream address is neither `unix:/path` nor `HOST:PORT`.
    #[error("bad upstream address {address:?}: use unix:/path or HOST:PORT")]
    BadUpstream {
        /// The address as configured.
        address: String,
    },
    /// The FastCGI application could not be reached (its address stays in the log).
    #[error("upstream {address} unreachable: {reason}")]
    UpstreamUnreachable {
        /// The address as configured.
        address: String,
        /// Why.
        reason: String,
    },
    /// The FastCGI application refused the request (overloaded, cannot multiplex).
    #[error("upstream refused {script}: {reason}")]
    UpstreamRefused {
        /// The script's file name.
        script: String,
        /// Why.
        reason: String,
    },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

/// A failure's kind, for metrics and logs that count failures rather than describe them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No script named, or the script does not exist (404).
    NotFound,
    /// Outside the roots, not executable, or a self-naming shebang (403, 500).
    Refused,
    /// A sidecar or rule that cannot be used (500).
    BadDeclaration,
    /// The script could not be started, or the upstream address is invalid (500).
    StartFailed,
    /// The script failed or printed a malformed head (502).
    ScriptFailed,
    /// The probe failed (502).
    ProbeFailed,
    /// The upstream application could not be reached (502).
    UpstreamUnreachable,
    /// No slot or connection freed in time, or the application refused (503).
    Overloaded,
    /// The script ran past its timeout (504).
    Timeout,
    /// The client went away, or its connection failed.
    ClientGone,
    /// A bug: the engine itself failed (a panic caught by the front end).
    Internal,
}

impl FailureKind {
    /// A short name for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::NotFound => "not_found",
            FailureKind::Refused => "refused",
            FailureKind::BadDeclaration => "bad_declaration",
            FailureKind::StartFailed => "start_failed",
            FailureKind::ScriptFailed => "script_failed",
            FailureKind::ProbeFailed => "probe_failed",
            FailureKind::UpstreamUnreachable => "upstream_unreachable",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Timeout => "timeout",
            FailureKind::ClientGone => "client_gone",
            FailureKind::Internal => "internal",
        }
    }
}

impl Failure {
    /// Its kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            Failure::NoScript | Failure::ScriptMissing(_) => FailureKind::NotFound,
            Failure::OutsideRoot(_) | Failure::NotExecutable(_) | Failure::SelfShebang(_) => {
                FailureKind::Refused
            }
            Failure::BadSidecar { .. } | Failure::BadRules { .. } => FailureKind::BadDeclaration,
            Failure::SpawnFailed { .. } | Failure::BadUpstream { .. } => FailureKind::StartFailed,
            Failure::ScriptFailed { .. } | Failure::MalformedHead { .. } => {
                FailureKind::ScriptFailed
            }
            Failure::ProbeFailed { .. } => FailureKind::ProbeFailed,
            Failure::UpstreamUnreachable { .. } => FailureKind::UpstreamUnreachable,
            Failure::Overloaded(_) | Failure::UpstreamRefused { .. } => FailureKind::Overloaded,
            Failure::Timeout { .. } => FailureKind::Timeout,
            Failure::Io(_) => FailureKind::ClientGone,
        }
    }

    /// The HTTP status that answers this failure.
    pub fn status(&self) -> u16 {
        match self {
            Failure::ScriptMissing(_) | Failure::NoScript => 404,
            Failure::OutsideRoot(_) | Failure::NotExecutable(_) => 403,
            Failure::SelfShebang(_)
            | Failure::BadSidecar { .. }
            | Failure::BadRules { .. }
            | Failure::SpawnFailed { .. }
            | Failure::BadUpstream { .. } => 500,
            Failure::ScriptFailed { .. }
            | Failure::MalformedHead { .. }
            | Failure::ProbeFailed { .. }
            | Failure::UpstreamUnreachable { .. } => 502,
            Failure::Overloaded(_) | Failure::UpstreamRefused { .. } => 503,
            Failure::Timeout { .. } => 504,
            Failure::Io(_) => 500,
        }
    }

    /// The short text sent to the client. Details that belong in the log only (stderr, full
    /// paths) are left out; the sidecar error is shown because the operator needs it.
    pub fn public_message(&self) -> String {
        match self {
            Failure::ScriptFailed { script, .. } => format!("script {script} failed"),
            Failure::MalformedHead { script, .. } => {
                format!("script {script} printed malformed CGI headers")
            }
            Failure::SpawnFailed { script, .. } => format!("could not start script {script}"),
            // The upstream's address is the operator's business, not the visitor's.
            Failure::UpstreamUnreachable { .. } => "the application server is unavailable".into(),
            Failure::BadUpstream { .. } => "the application server is misconfigured".into(),
            Failure::UpstreamRefused { .. } => "the application server is overloaded".into(),
            other => other.to_string(),
        }
    }
}

/// The reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract_table() {
        let name = || "a.cgi".to_string();
        assert_eq!(Failure::ScriptMissing(name()).status(), 404);
        assert_eq!(Failure::OutsideRoot(name()).status(), 403);
        assert_eq!(Failure::NotExecutable(name()).status(), 403);
        let failed = Failure::ScriptFailed {
            script: name(),
            reason: "exit 1".into(),
        };
        assert_eq!(failed.status(), 502);
        let head = Failure::MalformedHead {
            script: name(),
            reason: "x".into(),
        };
        assert_eq!(head.status(), 502);
        assert_eq!(
            Failure::Timeout {
                script: name(),
                after: Duration::from_secs(1)
            }
            .status(),
            504
        );
        let sidecar = Failure::BadSidecar {
            file: "a.cgi.conditional.json".into(),
            reason: "x".into(),
        };
        assert_eq!(sidecar.status(), 500);
        assert!(sidecar.public_message().contains("a.cgi.conditional.json"));
        assert_eq!(Failure::SelfShebang(name()).status(), 500);
    }
}
