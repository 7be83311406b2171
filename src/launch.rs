//! How a script is started: its backend (a process, or the FastCGI application named by an
//! upstream), interpreter, timeout and environment, and the probe that asks a script for its
//! last change. The engine and delivery see only the [`Backend`] interface.

use std::cell::Cell;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::fastcgi_client::Upstreams;
use crate::backend::process::ProcessBackend;
use crate::backend::{
    AbortHandle, Backend, Ended, ErrorOutput, Input, Prefetch, RunError, ScriptCall, ScriptRun,
    read_to_end,
};
use crate::cgi_head::{self, HeadParse};
use crate::declaration::{self, Declaration};
use crate::failure::Failure;
use crate::job::{Job, Runs};
use crate::request::{Method, Request};
use crate::script::{Interpreter, Script};
use crate::shebang::ShebangCache;
use crate::slots::Slots;
use crate::timestamp::parse_flexible;

/// Time a script may run when nothing else sets it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Set in a script's environment to the script's real path, so a wrapper started again for
/// the same script (a shebang through `env`) refuses instead of looping.
const WRAPPED_MARK: &str = "CONDITIONAL_WRAPPED";
/// Set in the probe run's environment: answer with the last change, not the page.
const PROBE_MARK: &str = "CONDITIONAL_PROBE";
/// A probe answers with one line; more than this is a failed probe (502).
const PROBE_OUTPUT_LIMIT: usize = 1024 * 1024;

/// What a script may run on: the front end's `--max-children` slots for processes, and the
/// FastCGI applications with `--upstream` as the default one.
#[derive(Clone, Default)]
pub struct Backends {
    /// The `--max-children` cap on processes, when the front end has one.
    pub slots: Option<Arc<Slots>>,
    /// The pools of connections to FastCGI applications.
    pub upstreams: Arc<Upstreams>,
    /// `--upstream`: the application every script is forwarded to unless its declaration
    /// names another.
    pub upstream: Option<String>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// Whether `request` may be forwarded to a FastCGI application: one is named for every
    /// script or by the request, or a declaration named one before. Only a cheap first test,
    /// before the script is resolved: its plan says for sure.
    pub(crate) fn may_forward(&self, request: &Request) -> bool {
        self.upstream.is_some()
            || request
                .var("CONDITIONAL_UPSTREAM")
                .is_some_and(|u| !u.is_empty())
            || self.upstreams.used()
    }
}

/// Why a script is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// For its response.
    Page,
    /// For its last change (with `CONDITIONAL_PROBE=1`, or the declaration's probe command).
    Probe,
}

/// A resolved script and how to run it (`explain` builds one to run the probe).
pub struct Plan {
    /// The resolved script.
    pub(crate) script: Script,
    /// Variables the front end adds when the request lacks them (PATH).
    base_env: Vec<(OsString, OsString)>,
    /// Time allowed for one run.
    pub(crate) timeout: Duration,
    /// What runs it.
    backend: Box<dyn Backend>,
    /// What runs its probe when the declaration names a `probe_command` (else `backend`).
    probe_backend: Option<Box<dyn Backend>>,
    /// The declaration's `env`: added to the script's environment, replacing the request's.
    declared_env: Vec<(String, OsString)>,
    /// Scripts started so far for this request.
    runs: Cell<Runs>,
}

/// Resolves the backend, interpreter, timeout and environment (declaration first, then the
/// command line and front end, then the server's environment). `shebangs` keeps the scripts'
/// shebang lines between requests (long-running modes).
pub fn plan(
    job: &Job<'_>,
    script: Script,
    declaration: Option<&Declaration>,
    backends: &Backends,
    shebangs: Option<&ShebangCache>,
) -> Result<Plan, Failure> {
    let request = job.request;
    let timeout = declaration
        .and_then(|s| s.timeout)
        .or(job.timeout)
        .or_else(|| {
            request
                .var_str("CONDITIONAL_TIMEOUT")
                .and_then(|t| t.trim().parse().ok())
                .and_then(declaration::parse_timeout_seconds)
        })
        .unwrap_or(DEFAULT_TIMEOUT);
    let upstream = declaration
        .and_then(|s| s.upstream.clone())
        .or_else(|| backends.upstream.clone())
        .or_else(|| request.var_str("CONDITIONAL_UPSTREAM").map(str::to_string))
        .filter(|u| !u.is_empty());
    let backend: Box<dyn Backend> = match upstream {
        // An application finds the script by SCRIPT_FILENAME; it need not be executable.
        Some(address) => Box::new(
            backends
                .upstreams
                .backend(&address, request.method().is_get_or_head())?,
        ),
        None => Box::new(process_backend(
            job,
            &script,
            declaration,
            backends,
            shebangs,
        )?),
    };
    // A probe command is argv, no shell, run in the script's folder like the script itself.
    let probe_backend = match declaration.and_then(|d| d.probe_command.as_deref()) {
        Some([program, args @ ..]) => Some(Box::new(ProcessBackend {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            cwd: script.folder().to_path_buf(),
            slots: backends.slots.clone(),
            name: script.name.clone(),
        }) as Box<dyn Backend>),
        _ => None,
    };
    let declared_env = declaration
        .map(|d| {
            d.env
                .iter()
                .map(|(k, v)| (k.clone(), OsString::from(v)))
                .collect()
        })
        .unwrap_or_default();
    let base_env = job
        .base_env
        .iter()
        .filter(|(name, _)| request.var(name).is_none())
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    Ok(Plan {
        script,
        base_env,
        timeout,
        backend,
        probe_backend,
        declared_env,
        runs: Cell::new(Runs::default()),
    })
}

/// The script as a program: its interpreter (command line, declaration, server environment) or
/// its own shebang.
fn process_backend(
    job: &Job<'_>,
    script: &Script,
    declaration: Option<&Declaration>,
    backends: &Backends,
    shebangs: Option<&ShebangCache>,
) -> Result<ProcessBackend, Failure> {
    let request = job.request;
    let interpreter = job
        .interpreter
        .clone()
        .or_else(|| {
            declaration
                .and_then(|s| s.interpreter.as_deref())
                .and_then(Interpreter::parse)
        })
        .or_else(|| {
            request
                .var_str("CONDITIONAL_INTERPRETER")
                .and_then(Interpreter::parse)
        });
    // The wrapper marks what it runs; meeting its own mark for the same script means the script
    // came back to the wrapper by a path the shebang check cannot see (`#!/usr/bin/env ...`).
    let looped = request
        .var(WRAPPED_MARK)
        .is_some_and(|v| v == script.real_path.as_os_str().as_bytes());
    if looped && interpreter.is_none() {
        return Err(Failure::SelfShebang(script.name.clone()));
    }
    let (program, args) = crate::script::command_line(script, interpreter.as_ref(), shebangs)?;
    Ok(ProcessBackend {
        program,
        args,
        cwd: script.folder().to_path_buf(),
        slots: backends.slots.clone(),
        name: script.name.clone(),
    })
}

impl Plan {
    /// The script's environment for this request: SCRIPT_FILENAME names the script itself by
    /// its real path (under Apache `Action` it named the wrapper, and php-cgi opens it), and
    /// HEAD runs as GET so the headers match.
    fn env_for(&self, request: &Request, extra: &[(&str, OsString)]) -> Vec<(OsString, OsString)> {
        // The declaration's variables first: the call's and the wrapper's own replace them.
        let mut vars: Vec<(&str, OsString)> = self
            .declared_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let mut set = |name: &'static str, value: OsString| {
            vars.retain(|(n, _)| *n != name);
            vars.push((name, value));
        };
        let real_path = self.script.real_path.clone().into_os_string();
        set("SCRIPT_FILENAME", real_path.clone());
        set(WRAPPED_MARK, real_path);
        if request.method() == Method::Head {
            set("REQUEST_METHOD", "GET".into());
        }
        for (name, value) in extra {
            vars.retain(|(n, _)| n != name);
            vars.push((name, value.clone()));
        }
        let mut env = self.base_env.clone();
        env.extend(request.script_env(&vars));
        env
    }

    /// Starts the script for `request` (the page, or its probe), with `extra` variables and
    /// its body on `input`.
    pub(crate) fn start(
        &self,
        purpose: Purpose,
        request: &Request,
        extra: &[(&str, OsString)],
        input: Input,
        errors: &ErrorOutput,
        abort: &AbortHandle,
    ) -> Result<Box<dyn ScriptRun>, Failure> {
        let probe = purpose == Purpose::Probe;
        let mut extra = extra.to_vec();
        if probe {
            extra.push((PROBE_MARK, "1".into()));
        }
        let env = self.env_for(request, &extra);
        let call = ScriptCall {
            env: &env,
            timeout: self.timeout,
            script: &self.script.name,
        };
        let backend = match &self.probe_backend {
            Some(command) if probe => command,
            _ => &self.backend,
        };
        let run = backend.start(&call, input, errors, abort)?;
        self.note_started(purpose, backend.kind());
        Ok(run)
    }

    /// The page's request made ready by its backend for the front end to run without a
    /// blocking thread ([`Backend::prefetch`]), counted as started; `None` when the backend
    /// cannot (then [`Plan::start`]).
    pub(crate) fn prefetch(
        &self,
        request: &Request,
        extra: &[(&str, OsString)],
    ) -> Option<Prefetch> {
        let env = self.env_for(request, extra);
        let call = ScriptCall {
            env: &env,
            timeout: self.timeout,
            script: &self.script.name,
        };
        let prefetch = self.backend.prefetch(&call)?;
        self.note_started(Purpose::Page, self.backend.kind());
        Some(prefetch)
    }

    fn note_started(&self, purpose: Purpose, backend: &'static str) {
        let mut runs = self.runs.get();
        match purpose {
            Purpose::Probe => runs.probes += 1,
            Purpose::Page => runs.page += 1,
        }
        runs.backend = Some(backend);
        self.runs.set(runs);
    }

    /// Notes a probe answer reused instead of run.
    pub(crate) fn note_probe_reused(&self) {
        let mut runs = self.runs.get();
        runs.probes_reused += 1;
        self.runs.set(runs);
    }

    /// Scripts started so far for this request.
    pub fn runs(&self) -> Runs {
        self.runs.get()
    }

    /// Waits for a run whose output has ended; anything but success is its failure.
    pub(crate) fn wait_success(&self, run: &mut dyn ScriptRun) -> Result<(), Failure> {
        match run.wait().map_err(|e| self.run_error(e))? {
            Ended::Success => Ok(()),
            Ended::Failed(reason) => Err(Failure::ScriptFailed {
                script: self.script.name.clone(),
                reason,
            }),
            Ended::Refused(reason) => Err(Failure::UpstreamRefused {
                script: self.script.name.clone(),
                reason,
            }),
        }
    }

    pub(crate) fn run_error(&self, error: RunError) -> Failure {
        match error {
            RunError::Timeout => Failure::Timeout {
                script: self.script.name.clone(),
                after: self.timeout,
            },
            RunError::Aborted => Failure::Io(io::ErrorKind::ConnectionAborted.into()),
            RunError::Io(e) => Failure::ScriptFailed {
                script: self.script.name.clone(),
                reason: e.to_string(),
            },
        }
    }
}

/// Runs the probe: the script with CONDITIONAL_PROBE=1, whose first line is its last change.
pub(crate) fn probe(
    plan: &Plan,
    request: &Request,
    errors: &ErrorOutput,
    abort: &AbortHandle,
) -> Result<SystemTime, Failure> {
    let mut run = plan.start(Purpose::Probe, request, &[], Input::Null, errors, abort)?;
    let failed = |reason: String| Failure::ProbeFailed {
        script: plan.script.name.clone(),
        reason,
    };
    let output = read_to_end(run.as_mut(), PROBE_OUTPUT_LIMIT).map_err(|e| match e {
        RunError::Io(e) => failed(e.to_string()),
        other => plan.run_error(other),
    })?;
    match run.wait().map_err(|e| plan.run_error(e))? {
        Ended::Success => {}
        Ended::Failed(reason) => return Err(failed(reason)),
        // The application turned the probe away, as it may any request: 503, not a bad probe.
        Ended::Refused(reason) => {
            return Err(Failure::UpstreamRefused {
                script: plan.script.name.clone(),
                reason,
            });
        }
    }
    parse_probe_answer(&output).ok_or_else(|| {
        failed("the first line is not unix seconds, an HTTP-date or RFC 3339".into())
    })
}

/// The probe's first line; for interpreters that print CGI headers first (php-cgi), the first
/// line of the body.
pub fn parse_probe_answer(output: &[u8]) -> Option<SystemTime> {
    let first_line = |bytes: &[u8]| {
        let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        std::str::from_utf8(line).ok().and_then(parse_flexible)
    };
    first_line(output).or_else(|| match cgi_head::parse(output, true) {
        HeadParse::Complete(_, body_at) => first_line(&output[body_at..]),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answer_plain_or_after_cgi_headers() {
        let t = crate::timestamp::from_unix(1_718_443_800);
        assert_eq!(parse_probe_answer(b"1718443800\n"), t);
        assert_eq!(parse_probe_answer(b"2024-06-15T09:30:00Z"), t);
        let php = b"X-Powered-By: PHP/8.2\r\nContent-type: text/html\r\n\r\n1718443800\n";
        assert_eq!(parse_probe_answer(php), t);
        assert_eq!(parse_probe_answer(b"hello\n"), None);
    }
}
