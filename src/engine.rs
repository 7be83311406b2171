//! The engine: one request in, one response out, whichever front end is serving.
//!
//! It resolves the script, loads its sidecar, decides 304/412 without running it when it can,
//! and otherwise runs it and passes its response on with validators, cache policy and coding.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cache_policy::CachePolicy;
use crate::cgi_head::{self, HeadParse};
use crate::encoding::{self, BodyEncoder, Coding};
use crate::failure::Failure;
use crate::preconditions::{self, Decision, Rule};
use crate::request::{Conditions, Method, Request};
use crate::response::{BodyWriter, ResponseHead, ResponseSink};
use crate::runner::{AbortHandle, ErrorOutput, Input, RunError, RunningScript, ScriptCommand};
use crate::script::{Interpreter, Script};
use crate::sidecar::{self, Privacy, Sidecar};
use crate::slots::Slots;
use crate::timestamp::{format_http_date, parse_flexible, unix_seconds};
use crate::validators::{self, Derivation, Inputs};

/// Bodies up to this size are buffered whole, so they get a Content-Length and a script failure
/// can still become a clean 502; larger ones stream with flat memory.
pub const BUFFER_LIMIT: usize = 256 * 1024;
/// Time a script may run when nothing else sets it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// A probe answers with one line; more than this is not a probe answer.
const PROBE_OUTPUT_LIMIT: usize = 64 * 1024;
/// Headers a 304 may carry from a pass-through script's output (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [&str; 6] = [
    "ETag",
    "Last-Modified",
    "Cache-Control",
    "Expires",
    "Vary",
    "Content-Location",
];
/// Headers the wrapper owns for a declared script's 200.
const OWNED_HEADERS: [&str; 5] = [
    "Last-Modified",
    "ETag",
    "Cache-Control",
    "Expires",
    "Pragma",
];

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
    /// The script the front end chose.
    pub script: PathBuf,
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
    /// How it was decided: `304 If-None-Match matched`, `200 ran script`, ...
    pub summary: String,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// False when the response could not be completed after its head was sent.
    pub complete: bool,
}

/// The engine's configuration.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    /// Only scripts whose real path lies under this folder run (FastCGI, serve).
    pub root: Option<PathBuf>,
    /// Caps scripts running at once; answers given without running a script need no slot.
    pub slots: Option<Arc<Slots>>,
}

/// How far a request got; decides what can still be sent when something fails.
#[derive(Default)]
struct Progress {
    head_sent: bool,
    input_taken: bool,
    body_bytes: u64,
}

/// A resolved script and how to run it (`explain` builds one to run the probe).
pub struct Plan {
    script: Script,
    command: ScriptCommand,
    slots: Option<Arc<Slots>>,
}

/// A script's output once its head has been read.
struct Output {
    running: RunningScript,
    head: ResponseHead,
    /// Body bytes read so far.
    buffered: Vec<u8>,
    /// The whole body is in `buffered` and the script exited successfully.
    complete: bool,
}

/// What the wrapper adds to a declared script's 200 and 304 (`explain` prints it).
pub struct Representation {
    /// Last-Modified and ETag, with the sources they came from.
    pub derivation: Derivation,
    /// Cache-Control and Expires (privacy already forced for feed and session mode).
    pub policy: CachePolicy,
    /// The sidecar's `compress`.
    pub compress: bool,
}

/// One request in flight: what it reads from and writes to, and how far it got.
struct Exchange<'a> {
    request: &'a Request,
    body: &'a mut dyn RequestBody,
    errors: &'a ErrorOutput,
    abort: &'a AbortHandle,
    sink: &'a mut dyn ResponseSink,
    progress: Progress,
}

impl Engine {
    /// Answers one request. Never fails: errors become their status (the contract's table),
    /// or, once the head is out, an incomplete outcome.
    pub fn handle(
        &self,
        job: &Job<'_>,
        body: &mut dyn RequestBody,
        errors: &ErrorOutput,
        abort: &AbortHandle,
        sink: &mut dyn ResponseSink,
    ) -> Outcome {
        let mut ex = Exchange {
            request: job.request,
            body,
            errors,
            abort,
            sink,
            progress: Progress::default(),
        };
        let failure = match self.respond(job, &mut ex) {
            Ok(outcome) => return outcome,
            Err(failure) => failure,
        };
        let name = job.script.file_name().unwrap_or_default().to_string_lossy();
        eprintln!("http-conditional: {name}: {failure}");
        let status = failure.status();
        let mut outcome = Outcome {
            status,
            summary: format!("{status} {failure}"),
            body_bytes: ex.progress.body_bytes,
            complete: false,
        };
        if ex.progress.head_sent || abort.is_aborted() {
            return outcome;
        }
        if !ex.progress.input_taken {
            let _ = ex.body.discard();
        }
        let text = format!("{}\n", failure.public_message());
        outcome.complete = send_text(ex.sink, status, &text).is_ok();
        outcome.body_bytes = text.len() as u64;
        outcome
    }

    fn respond(&self, job: &Job<'_>, ex: &mut Exchange<'_>) -> Result<Outcome, Failure> {
        let script = Script::resolve(&job.script, self.root.as_deref())?;
        let sidecar = sidecar::load(&script.path)?;
        let mut plan = plan(job, script, sidecar.as_ref())?;
        plan.slots = self.slots.clone();
        match sidecar {
            Some(sidecar) => declared(&plan, &sidecar, ex),
            None => pass_through(&plan, ex),
        }
    }
}

/// A declared script: 304/412 without running it when the conditions allow, else its 200 with
/// the wrapper's validators, policy and coding.
fn declared(plan: &Plan, sidecar: &Sidecar, ex: &mut Exchange<'_>) -> Result<Outcome, Failure> {
    let request = ex.request;
    let now = SystemTime::now();
    let method = request.method();
    let conditions = Conditions::from_request(request, now);
    let representation = represent(plan, sidecar, request, ex.errors, ex.abort, now)?;
    let coding = if sidecar.compress {
        encoding::negotiate(request.header("HTTP_ACCEPT_ENCODING"))
    } else {
        Coding::Identity
    };
    let verdict =
        preconditions::evaluate(&conditions, &representation.derivation.validators, &method);
    match verdict.decision {
        Decision::NotModified => {
            ex.body.discard()?;
            let mut head = ResponseHead::new(304);
            representation.apply(&mut head, coding, now);
            ex.sink.send_head(&head)?;
            ex.sink.finish()?;
            return Ok(answered(304, verdict.rule));
        }
        Decision::PreconditionFailed => {
            ex.body.discard()?;
            send_text(ex.sink, 412, "412 Precondition Failed\n")?;
            return Ok(answered(412, verdict.rule));
        }
        Decision::Proceed => {}
    }
    let mut extra = Vec::new();
    if sidecar.feed {
        let client_date = conditions
            .if_modified_since
            .value()
            .map_or(0, |t| unix_seconds(*t));
        extra.push(("CONDITIONAL_CLIENT_DATE", client_date.to_string().into()));
    }
    let mut output = start(plan, &extra, ex)?;
    let mut coding_used = Coding::Identity;
    if output.head.status == 200 {
        output.head.remove(&OWNED_HEADERS);
        // The original library's refresh: after a change, answer with the new validators.
        let fresh;
        let representation = if method.is_get_or_head() {
            &representation
        } else {
            fresh = represent(
                plan,
                sidecar,
                request,
                ex.errors,
                ex.abort,
                SystemTime::now(),
            )?;
            &fresh
        };
        if !output.head.has("Content-Encoding") {
            coding_used = coding;
        }
        representation.apply(&mut output.head, coding_used, SystemTime::now());
    }
    send(output, coding_used, &method, ex)
}

impl Representation {
    /// Adds ETag (of the variant for `coding`), Last-Modified, the cache policy and Vary: the
    /// headers a 304 and a 200 share (Content-Encoding belongs to the 200's body alone).
    pub fn apply(&self, head: &mut ResponseHead, coding: Coding, now: SystemTime) {
        let validators = &self.derivation.validators;
        if let Some(etag) = &validators.etag {
            let tag = match coding.token() {
                Some(suffix) => etag.variant(suffix),
                None => etag.clone(),
            };
            head.push("ETag", tag.to_string());
        }
        if let Some(time) = validators.last_modified {
            head.push("Last-Modified", format_http_date(time));
        }
        for (name, value) in self.policy.headers(now) {
            head.push(name, value);
        }
        let mut vary = Vec::new();
        if self.compress {
            vary.push("Accept-Encoding");
        }
        if self.derivation.session_covered {
            vary.push("Cookie");
        }
        if !vary.is_empty() {
            head.add_vary(&vary);
        }
    }
}

/// Validators and policy of a declared script at `now` (running the probe when asked).
pub fn represent(
    plan: &Plan,
    sidecar: &Sidecar,
    request: &Request,
    errors: &ErrorOutput,
    abort: &AbortHandle,
    now: SystemTime,
) -> Result<Representation, Failure> {
    let probe = if sidecar.probe {
        Some(probe(plan, request, errors, abort)?)
    } else {
        None
    };
    let derivation = validators::derive(
        sidecar,
        &Inputs {
            script: &plan.script.path,
            request,
            probe,
            now,
        },
    );
    let forced_private = sidecar.feed || derivation.session_covered;
    let policy = CachePolicy {
        seconds: sidecar.cache_seconds,
        privacy: if forced_private {
            Privacy::Private
        } else {
            sidecar.cache_privacy
        },
    };
    Ok(Representation {
        derivation,
        policy,
        compress: sidecar.compress,
    })
}

/// Runs a script without a sidecar; if its own output carries validators that the request's
/// conditions match, the client still gets a 304 (bandwidth saved, not CPU).
fn pass_through(plan: &Plan, ex: &mut Exchange<'_>) -> Result<Outcome, Failure> {
    let method = ex.request.method();
    let output = start(plan, &[], ex)?;
    let conditions = Conditions::from_request(ex.request, SystemTime::now());
    let applies = output.head.status == 200 && method.is_get_or_head() && !conditions.is_empty();
    let own =
        validators::from_script_headers(output.head.get("ETag"), output.head.get("Last-Modified"));
    if !applies || !preconditions::has_validators(&own) {
        return send(output, Coding::Identity, &method, ex);
    }
    let verdict = preconditions::evaluate(&conditions, &own, &method);
    let Some(status) = verdict.decision.status() else {
        return send(output, Coding::Identity, &method, ex);
    };
    let mut head = ResponseHead::new(status);
    head.headers = output
        .head
        .headers
        .iter()
        .filter(|(n, _)| {
            NOT_MODIFIED_HEADERS
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h))
        })
        .cloned()
        .collect();
    finish_silently(output, plan)?;
    if status == 412 {
        send_text(ex.sink, 412, "412 Precondition Failed\n")?;
    } else {
        ex.sink.send_head(&head)?;
        ex.sink.finish()?;
    }
    Ok(Outcome {
        status,
        summary: format!("{status} after running the script: {}", verdict.rule),
        body_bytes: 0,
        complete: true,
    })
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
    /// The command with the request's environment: SCRIPT_FILENAME names the script itself
    /// (under Apache `Action` it named the wrapper, and php-cgi reads it), and HEAD runs as
    /// GET so the headers match.
    fn command_for(&self, request: &Request, extra: &[(&str, OsString)]) -> ScriptCommand {
        let mut extra = extra.to_vec();
        extra.push(("SCRIPT_FILENAME", self.script.path.clone().into_os_string()));
        if request.method() == Method::Head {
            extra.push(("REQUEST_METHOD", "GET".into()));
        }
        let mut command = self.command.clone();
        command.env.extend(request.script_env(&extra));
        command
    }

    fn spawn(
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

    fn run_error(&self, error: RunError) -> Failure {
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
fn probe(
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

/// Starts the script and reads its head and as much body as fits the buffer.
fn start(
    plan: &Plan,
    extra: &[(&str, OsString)],
    ex: &mut Exchange<'_>,
) -> Result<Output, Failure> {
    let command = plan.command_for(ex.request, extra);
    ex.progress.input_taken = true;
    let mut running = plan.spawn(&command, ex.body.take_input(), ex.errors, ex.abort)?;
    let mut buffered = Vec::with_capacity(8 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at_eof = false;
    let (head, body_at) = loop {
        match cgi_head::parse(&buffered, at_eof) {
            HeadParse::Complete(head, body_at) => break (head, body_at),
            HeadParse::Malformed(reason) => {
                running.kill();
                return Err(Failure::MalformedHead {
                    script: plan.script.name.clone(),
                    reason,
                });
            }
            HeadParse::Incomplete => {}
        }
        let n = running.read(&mut chunk).map_err(|e| plan.run_error(e))?;
        at_eof = n == 0;
        buffered.extend_from_slice(&chunk[..n]);
    };
    buffered.drain(..body_at);
    while !at_eof && buffered.len() <= BUFFER_LIMIT {
        let n = running.read(&mut chunk).map_err(|e| plan.run_error(e))?;
        at_eof = n == 0;
        buffered.extend_from_slice(&chunk[..n]);
    }
    let complete = at_eof;
    if complete {
        running = wait_success(running, plan)?;
    }
    Ok(Output {
        running,
        head,
        buffered,
        complete,
    })
}

/// Waits for a script whose output has ended; a failure exit is a 502.
fn wait_success(mut running: RunningScript, plan: &Plan) -> Result<RunningScript, Failure> {
    let status = running.wait_in_place().map_err(|e| plan.run_error(e))?;
    if status.success() {
        Ok(running)
    } else {
        Err(Failure::ScriptFailed {
            script: plan.script.name.clone(),
            reason: status.to_string(),
        })
    }
}

/// Reads the rest of a script's output into nothing and checks its exit.
fn finish_silently(mut output: Output, plan: &Plan) -> Result<(), Failure> {
    if output.complete {
        return Ok(());
    }
    let mut chunk = vec![0u8; 64 * 1024];
    drain(&mut output.running, &mut chunk).map_err(|e| plan.run_error(e))?;
    wait_success(output.running, plan).map(drop)
}

/// Sends the head and body: whole with a Content-Length when buffered, streamed otherwise.
fn send(
    mut output: Output,
    coding: Coding,
    method: &Method,
    ex: &mut Exchange<'_>,
) -> Result<Outcome, Failure> {
    let head = &mut output.head;
    let status = head.status;
    let is_head = *method == Method::Head;
    let progress = &mut ex.progress;
    if let Some(token) = coding.token() {
        head.remove(&["Content-Length"]);
        head.push("Content-Encoding", token);
    }
    if output.complete {
        let body = encoding::encode_all(coding, &output.buffered)?;
        head.remove(&["Content-Length"]);
        head.push("Content-Length", body.len().to_string());
        ex.sink.send_head(head)?;
        progress.head_sent = true;
        if !is_head {
            ex.sink.send_body(&body)?;
            progress.body_bytes = body.len() as u64;
        }
        ex.sink.finish()?;
        return Ok(ran(status, progress.body_bytes, true));
    }
    ex.sink.send_head(head)?;
    progress.head_sent = true;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut writer = BodyWriter::new(&mut *ex.sink);
    let result = if is_head {
        drain(&mut output.running, &mut chunk)
    } else {
        stream(&mut output, coding, &mut writer, &mut chunk)
    };
    progress.body_bytes = writer.written;
    let exit = result.and_then(|()| output.running.wait_in_place());
    let complete = matches!(&exit, Ok(s) if s.success());
    if let Err(e) = &exit {
        eprintln!("http-conditional: response cut short: {e:?}");
    } else if !complete {
        eprintln!("http-conditional: script failed after its response started: {exit:?}");
    }
    ex.sink.finish()?;
    Ok(ran(status, progress.body_bytes, complete))
}

fn stream(
    output: &mut Output,
    coding: Coding,
    writer: &mut BodyWriter<'_>,
    chunk: &mut [u8],
) -> Result<(), RunError> {
    use std::io::Write;
    let mut encoder = BodyEncoder::new(coding, writer);
    encoder.write_all(&output.buffered).map_err(RunError::Io)?;
    output.buffered = Vec::new();
    loop {
        let n = output.running.read(chunk)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&chunk[..n]).map_err(RunError::Io)?;
    }
    encoder.finish().map_err(RunError::Io)?;
    Ok(())
}

fn drain(running: &mut RunningScript, chunk: &mut [u8]) -> Result<(), RunError> {
    while running.read(chunk)? > 0 {}
    Ok(())
}

fn answered(status: u16, rule: Rule) -> Outcome {
    Outcome {
        status,
        summary: format!("{status} without running the script: {rule}"),
        body_bytes: 0,
        complete: true,
    }
}

fn ran(status: u16, body_bytes: u64, complete: bool) -> Outcome {
    Outcome {
        status,
        summary: format!("{status} ran script"),
        body_bytes,
        complete,
    }
}

/// Sends a short plain-text response (errors, 412).
pub fn send_text(sink: &mut dyn ResponseSink, status: u16, text: &str) -> io::Result<()> {
    let mut head = ResponseHead::new(status);
    head.push("Content-Type", "text/plain; charset=utf-8");
    head.push("Content-Length", text.len().to_string());
    head.push("Cache-Control", "no-store");
    sink.send_head(&head)?;
    sink.send_body(text.as_bytes())?;
    sink.finish()
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
