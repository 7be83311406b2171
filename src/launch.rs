//! How a script is started: interpreter, timeout, environment and `--max-children` slot, and
//! the probe that asks a script for its last change.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cgi_head::{self, HeadParse};
use crate::engine::Job;
use crate::failure::Failure;
use crate::request::{Method, Request};
use crate::runner::{AbortHandle, ErrorOutput, Input, RunError, RunningScript, ScriptCommand};
use crate::script::{Interpreter, Script};
use crate::sidecar::{self, Sidecar};
use crate::slots::Slots;
use crate::timestamp::parse_flexible;

/// Time a script may run when nothing else sets it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Set in a script's environment to the script's real path, so a wrapper started again for
/// the same script (a shebang through `env`) refuses instead of looping.
const WRAPPED_MARK: &str = "CONDITIONAL_WRAPPED";
/// A probe answers with one line; more than this is not a probe answer.
const PROBE_OUTPUT_LIMIT: usize = 64 * 1024;
/// A resolved script and how to run it (`explain` builds one to run the probe).
pub struct Plan {
    /// The resolved script.
    pub(crate) script: Script,
    /// How it runs, before the request's environment is added.
    pub(crate) command: ScriptCommand,
    /// The `--max-children` cap, when the front end has one.
    pub(crate) slots: Option<Arc<Slots>>,
}

/// Resolves interpreter, timeout and command line (sidecar, command line, environment).
pub fn plan(job: &Job<'_>, script: Script, sidecar: Option<&Sidecar>) -> Result<Plan, Failure> {
    let request = job.request;
    let interpreter = job
        .interpreter
        .clone()
        .or_else(|| {
            sidecar
                .and_then(|s| s.interpreter.as_deref())
                .and_then(Interpreter::parse)
        })
        .or_else(|| {
            request
                .var_str("CONDITIONAL_INTERPRETER")
                .and_then(Interpreter::parse)
        });
    let timeout = sidecar
        .and_then(|s| s.timeout)
        .or(job.timeout)
        .or_else(|| {
            request
                .var_str("CONDITIONAL_TIMEOUT")
                .and_then(|t| t.trim().parse().ok())
                .and_then(sidecar::parse_timeout_seconds)
        })
        .unwrap_or(DEFAULT_TIMEOUT);
    // The wrapper marks what it runs; meeting its own mark for the same script means the script
    // came back to the wrapper by a path the shebang check cannot see (`#!/usr/bin/env ...`).
    let looped = request
        .var(WRAPPED_MARK)
        .is_some_and(|v| v == script.real_path.as_os_str().as_bytes());
    if looped && interpreter.is_none() {
        return Err(Failure::SelfShebang(script.name.clone()));
    }
    let (program, args) = crate::script::command_line(&script, interpreter.as_ref())?;
    let command = ScriptCommand {
        program,
        args,
        env: Vec::new(),
        cwd: script.folder().to_path_buf(),
        timeout,
    };
    let mut plan = Plan {
        script,
        command,
        slots: None,
    };
    plan.command.env = job
        .base_env
        .iter()
        .filter(|(name, _)| request.var(name).is_none())
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    Ok(plan)
}

impl Plan {
    /// The command with the request's environment: SCRIPT_FILENAME names the script itself by
    /// its real path (under Apache `Action` it named the wrapper, and php-cgi opens it), and
    /// HEAD runs as GET so the headers match.
    pub(crate) fn command_for(
        &self,
        request: &Request,
        extra: &[(&str, OsString)],
    ) -> ScriptCommand {
        let mut extra = extra.to_vec();
        let real_path = self.script.real_path.clone().into_os_string();
        extra.push(("SCRIPT_FILENAME", real_path.clone()));
        extra.push((WRAPPED_MARK, real_path));
        if request.method() == Method::Head {
            extra.push(("REQUEST_METHOD", "GET".into()));
        }
        let mut command = self.command.clone();
        command.env.extend(request.script_env(&extra));
        command
    }

    pub(crate) fn spawn(
        &self,
        command: &ScriptCommand,
        input: Input,
        errors: &ErrorOutput,
        abort: &AbortHandle,
    ) -> Result<RunningScript, Failure> {
        // A --max-children slot, held while the script runs; 503 when none frees in time.
        let slot = self
            .slots
            .as_ref()
            .map(|slots| slots.acquire())
            .transpose()?;
        let mut running = RunningScript::spawn(command, input, errors.clone(), abort.clone())
            .map_err(|e| Failure::SpawnFailed {
                script: self.script.name.clone(),
                reason: e.to_string(),
            })?;
        if let Some(slot) = slot {
            running.hold(Box::new(slot));
        }
        Ok(running)
    }

    pub(crate) fn run_error(&self, error: RunError) -> Failure {
        match error {
            RunError::Timeout => Failure::Timeout {
                script: self.script.name.clone(),
                after: self.command.timeout,
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
    let command = plan.command_for(request, &[("CONDITIONAL_PROBE", "1".into())]);
    let mut running = plan.spawn(&command, Input::Null, errors, abort)?;
    let output = running
        .read_to_end(PROBE_OUTPUT_LIMIT)
        .map_err(|e| plan.run_error(e))?;
    let status = running.wait().map_err(|e| plan.run_error(e))?;
    let failed = |reason: String| Failure::ProbeFailed {
        script: plan.script.name.clone(),
        reason,
    };
    if !status.success() {
        return Err(failed(format!("exited with {status}")));
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
