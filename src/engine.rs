//! The engine: one request in, one response out, whichever front end is serving.
//!
//! It resolves the script, asks what is declared for it (rules and sidecar), decides 304/412
//! without running it when it can,
//! and otherwise runs it and passes its response on with validators, cache policy and coding.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::backend::{AbortHandle, ErrorOutput, Input, Prefetch, ScriptRun};
use crate::cache_policy::CachePolicy;
use crate::declaration::{Declaration, Declared, EtagBasis, Privacy};
use crate::declarations::Declarations;
use crate::delivery::{Exchange, Output, Progress, finish_silently, read_output, send, start};
use crate::digest_cache::DigestCache;
use crate::encoding::{self, Coding};
use crate::failure::Failure;
use crate::log;
use crate::preconditions::{self, Decision};
use crate::probe_cache::{ProbeCache, ProbeError, ProbeKey, Served};
use crate::request::{Conditions, Request};
use crate::response::{ResponseHead, ResponseSink};
use crate::script::Script;
use crate::shebang::ShebangCache;
use crate::timestamp::{format_http_date, unix_seconds};
use crate::validators::{self, Derivation, Inputs};

pub use crate::delivery::{BUFFER_LIMIT, send_text, text_head};
pub use crate::job::{Answer, FailureKind, Job, Outcome, RequestBody, Runs};
use crate::launch::probe;
pub use crate::launch::{Backends, DEFAULT_TIMEOUT, Plan, parse_probe_answer, plan};

/// Headers a 304 may carry from a pass-through script's output: those RFC 9110 §15.4.5 names,
/// and Set-Cookie, since the script did run and its session change must reach the client.
const NOT_MODIFIED_HEADERS: [&str; 7] = [
    "ETag",
    "Last-Modified",
    "Cache-Control",
    "Expires",
    "Vary",
    "Content-Location",
    "Set-Cookie",
];
/// Headers the wrapper owns for a declared script's 200.
const OWNED_HEADERS: [&str; 5] = [
    "Last-Modified",
    "ETag",
    "Cache-Control",
    "Expires",
    "Pragma",
];

/// The engine's configuration.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    /// Only scripts whose real path lies under one of these folders run (FastCGI, serve);
    /// empty means no restriction (CGI mode: the web server chose the script).
    pub roots: Vec<PathBuf>,
    /// A script's `Location: /path` without `Status` (RFC 3875 §6.2.2) is answered 302 Found,
    /// as nginx does, where no server in front would redirect internally (FastCGI, serve);
    /// false leaves it to the server (CGI mode: Apache redirects internally).
    pub found_for_local_redirects: bool,
    /// Where declarations come from.
    pub declarations: DeclarationSource,
    /// Content digests for `"etag": "content"`, kept by device, inode, size and mtime
    /// (long-running modes); `None` hashes on every request (CGI mode).
    pub digest_cache: Option<Arc<DigestCache>>,
    /// Scripts' shebang lines, kept by the script's stamp (long-running modes); `None` reads
    /// the line on every request (CGI mode).
    pub shebang_cache: Option<Arc<ShebangCache>>,
    /// Probe answers kept for a declaration's `probe_ttl` (long-running modes).
    pub probe_cache: Option<Arc<ProbeCache<SystemTime>>>,
    /// What scripts run on: processes (capped by `--max-children`; answers given without
    /// running a script need no slot) or FastCGI applications.
    pub backends: Backends,
}

/// Where the engine finds what is declared for a script.
#[derive(Debug, Clone)]
pub enum DeclarationSource {
    /// Sidecars, and the rules file loaded at start-up if any (`--rules`, re-read on SIGHUP).
    Loaded(Arc<Declarations>),
    /// Sidecars, and the rules file each request names in `CONDITIONAL_RULES` (CGI mode, one
    /// request per process).
    NamedByRequest,
}

impl Default for DeclarationSource {
    fn default() -> Self {
        DeclarationSource::Loaded(Arc::new(Declarations::sidecars_only()))
    }
}

/// What the wrapper adds to a declared script's 200 and 304 (`explain` prints it).
pub struct Representation {
    /// Last-Modified and ETag, with the sources they came from.
    pub derivation: Derivation,
    /// Cache-Control and Expires (privacy already forced for feed and session mode).
    pub policy: CachePolicy,
    /// The declaration's `compress`.
    pub compress: bool,
    /// Session mode: `Vary: Cookie` on every answer, with or without the cookies, so no shared
    /// cache hands the cookie-less page to a visitor who has a session.
    pub session: bool,
}

impl Engine {
    /// The declarations loaded at start-up, for a front end to re-read them on SIGHUP.
    pub fn loaded_declarations(&self) -> Option<&Arc<Declarations>> {
        match &self.declarations {
            DeclarationSource::Loaded(declarations) => Some(declarations),
            DeclarationSource::NamedByRequest => None,
        }
    }

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
            found_for_local_redirects: self.found_for_local_redirects,
        };
        let result = self.respond(job, &mut ex);
        conclude(&named(job), ex, result)
    }

    /// How `job` begins, decided on the caller's thread: a 304 or 412 without running
    /// anything (as [`Engine::answer_without_running`]), a page its backend has made ready
    /// for the front end to run itself ([`Begun::Forward`], then [`Engine::finish`]), or
    /// anything else, which [`Engine::handle`] answers. Its work is the declaration's stats;
    /// a failure here is left to `handle` to answer and log.
    pub fn begin(&self, job: &Job<'_>) -> Begun {
        self.begin_with(job, true)
    }

    /// Answers a request begun as [`Begun::Forward`] from the run its prefetch gave (or the
    /// failure that kept it from starting), as [`Engine::handle`] would once the page has
    /// started: the same head parse, buffering, validators, coding, Range, and failures. It
    /// blocks only on what `run` blocks on.
    pub fn finish(
        &self,
        request: &Request,
        forward: Box<Forward>,
        run: Result<Box<dyn ScriptRun>, Failure>,
        errors: &ErrorOutput,
        abort: &AbortHandle,
        sink: &mut dyn ResponseSink,
    ) -> Outcome {
        let Forward { page, name } = *forward;
        let mut body = NoBody;
        let mut ex = Exchange {
            request,
            body: &mut body,
            errors,
            abort,
            sink,
            progress: Progress {
                // The page has started: nothing of a body is left to read.
                input_taken: true,
                script: Some(page.plan.script.real_path.clone()),
                ..Progress::default()
            },
            found_for_local_redirects: self.found_for_local_redirects,
        };
        let result = match run.and_then(|run| read_output(&page.plan, run, &ex)) {
            Ok(output) => self.deliver(&page, output, &mut ex),
            Err(failure) => Err(failure),
        };
        ex.progress.runs = page.plan.runs();
        conclude(&name, ex, result)
    }

    /// [`Engine::begin`]; with `forward` false, only a 304 or 412 is looked for.
    fn begin_with(&self, job: &Job<'_>, forward: bool) -> Begun {
        let request = job.request;
        let forward = forward
            && request.method().is_get_or_head()
            && request.announces_no_body()
            && self.backends.may_forward(request);
        // Without a precondition there is nothing to answer but the page: no work here that
        // `handle` would only do again.
        if !forward && !has_preconditions(request) {
            return Begun::Handle;
        }
        let Ok((plan, found)) = self.prepare(job) else {
            return Begun::Handle;
        };
        let mut page = Page {
            plan,
            declared: None,
            extra: Vec::new(),
        };
        if let Some(found) = found {
            let declaration = &found.declaration;
            if declaration.probe || declaration.etag == EtagBasis::Content {
                return Begun::Handle;
            }
            let now = SystemTime::now();
            match decide(&page.plan, declaration, request, None, None, now) {
                Decided::Answer(head, body, rule) => {
                    let mut outcome = Outcome::bodiless(head.status, Answer::WithoutRunning(rule));
                    outcome.body_bytes = body.len() as u64;
                    outcome.script = Some(page.plan.script.real_path.clone());
                    return Begun::Answered(AnsweredWithoutRunning {
                        head,
                        body,
                        outcome,
                    });
                }
                Decided::Proceed(representation) => {
                    page.declare(found, representation, request, now)
                }
            }
        }
        if !forward {
            return Begun::Handle;
        }
        match page.plan.prefetch(request, &page.extra) {
            Some(prefetch) => Begun::Forward {
                forward: Box::new(Forward {
                    page,
                    name: named(job).into_owned(),
                }),
                prefetch,
            },
            None => Begun::Handle,
        }
    }

    /// The response once the page's output has been read: a declared script's 200 with the
    /// wrapper's validators, or a pass-through script's own.
    fn deliver(
        &self,
        page: &Page,
        output: Output,
        ex: &mut Exchange<'_>,
    ) -> Result<Outcome, Failure> {
        match &page.declared {
            Some(declared) => declared_output(
                &page.plan,
                &declared.found.declaration,
                &declared.representation,
                self.digest_cache.as_deref(),
                output,
                ex,
            ),
            None => pass_through(&page.plan, output, ex),
        }
    }
}

/// The script's file name as the request named it, for log lines.
fn named<'a>(job: &'a Job<'_>) -> std::borrow::Cow<'a, str> {
    job.script
        .as_deref()
        .and_then(|p| p.file_name())
        .unwrap_or_default()
        .to_string_lossy()
}

/// Whether the request sends a precondition (RFC 9110 §13.1).
fn has_preconditions(request: &Request) -> bool {
    const PRECONDITIONS: [&str; 4] = [
        "HTTP_IF_MATCH",
        "HTTP_IF_NONE_MATCH",
        "HTTP_IF_MODIFIED_SINCE",
        "HTTP_IF_UNMODIFIED_SINCE",
    ];
    PRECONDITIONS.iter().any(|h| request.header(h).is_some())
}

/// The outcome of a request once answered; a failure becomes its status (the contract's
/// table), or, once the head is out, an incomplete outcome.
fn conclude(name: &str, mut ex: Exchange<'_>, result: Result<Outcome, Failure>) -> Outcome {
    let abort = ex.abort;
    let failure = match result {
        Ok(mut outcome) => {
            outcome.runs = ex.progress.runs;
            outcome.script = ex.progress.script.take();
            return outcome;
        }
        Err(failure) => failure,
    };
    {
        // A client that went away is routine for a web server, not worth a log line.
        let client_gone = abort.is_aborted()
            || matches!(&failure, Failure::Io(e) if matches!(
                e.kind(),
                io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
            ));
        if !client_gone {
            log::line(&format!("{name}: {failure}"));
        }
        let status = failure.status();
        let mut outcome = Outcome {
            status,
            answer: Answer::Failed(if client_gone {
                FailureKind::ClientGone
            } else {
                failure.kind()
            }),
            body_bytes: ex.progress.body_bytes,
            complete: false,
            runs: ex.progress.runs,
            script: ex.progress.script.take(),
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
}

impl Engine {
    /// The answer to `job` when it needs no script and no probe to run: a declared script's
    /// 304 or 412, decided exactly as [`Engine::handle`] decides it. A front end calls it on
    /// its own task before handing the request to `handle` on a blocking thread, and sends
    /// the answer itself; the request body is left to the front end to drop.
    ///
    /// `None` for everything else: a run, a probe (or a `"content"` ETag, which reads whole
    /// files), and every failure, which `handle` then answers and logs as usual. The work done
    /// here is the declaration's stats (the sidecar, the script, its `depends_on`).
    pub fn answer_without_running(&self, job: &Job<'_>) -> Option<AnsweredWithoutRunning> {
        match self.begin_with(job, false) {
            Begun::Answered(answer) => Some(answer),
            _ => None,
        }
    }

    /// The resolved script, how it would run, and what is declared for it.
    fn prepare(&self, job: &Job<'_>) -> Result<(Plan, Option<Arc<Declared>>), Failure> {
        let named = job.script.as_deref().ok_or(Failure::NoScript)?;
        let script = Script::resolve(named, &self.roots)?;
        let found = match &self.declarations {
            DeclarationSource::Loaded(declarations) => declarations.declared_for(&script)?,
            DeclarationSource::NamedByRequest => {
                Declarations::for_cgi(job.request)?.declared_for(&script)?
            }
        };
        let declaration = found.as_deref().map(|d| &d.declaration);
        let plan = plan(
            job,
            script,
            declaration,
            &self.backends,
            self.shebang_cache.as_deref(),
        )?;
        Ok((plan, found))
    }

    fn respond(&self, job: &Job<'_>, ex: &mut Exchange<'_>) -> Result<Outcome, Failure> {
        let (plan, found) = self.prepare(job)?;
        ex.progress.script = Some(plan.script.real_path.clone());
        let mut page = Page {
            plan,
            declared: None,
            extra: Vec::new(),
        };
        let result = self.run_page(&mut page, found, ex);
        ex.progress.runs = page.plan.runs();
        result
    }

    /// A declared script's 304 or 412 without running it when the conditions allow (after its
    /// probe, if it has one), else the page run and delivered.
    fn run_page(
        &self,
        page: &mut Page,
        found: Option<Arc<Declared>>,
        ex: &mut Exchange<'_>,
    ) -> Result<Outcome, Failure> {
        if let Some(found) = found {
            let request = ex.request;
            let declaration = &found.declaration;
            let probes = Probes {
                cache: self.probe_cache.as_deref(),
            };
            let now = SystemTime::now();
            let probe = probes.answer(&page.plan, declaration, request, ex.errors, ex.abort)?;
            let digests = self.digest_cache.as_deref();
            match decide(&page.plan, declaration, request, probe, digests, now) {
                Decided::Answer(head, body, rule) => return answer_now(&head, body, rule, ex),
                Decided::Proceed(representation) => {
                    page.declare(Arc::clone(&found), representation, request, now);
                }
            }
        }
        let output = start(&page.plan, &page.extra, ex)?;
        self.deliver(page, output, ex)
    }
}

/// How a request begins ([`Engine::begin`]).
pub enum Begun {
    /// A declared script's 304 or 412, decided without running it.
    Answered(AnsweredWithoutRunning),
    /// The page, to be run by the front end with `prefetch` and answered by
    /// [`Engine::finish`].
    Forward {
        /// What the engine settled before the run.
        forward: Box<Forward>,
        /// The request as its backend made it ready.
        prefetch: Prefetch,
    },
    /// Anything else: [`Engine::handle`].
    Handle,
}

/// What the engine settled about a page before it runs ([`Begun::Forward`]), kept for
/// [`Engine::finish`]: its plan and, for a declared script, the validators it was decided on.
pub struct Forward {
    page: Page,
    /// The script's name as requested, for log lines.
    name: String,
}

/// A page about to run: how, and for a declared script what it was decided on.
struct Page {
    plan: Plan,
    declared: Option<DeclaredPage>,
    /// Variables the page gets besides the request's (a feed's `CONDITIONAL_CLIENT_DATE`).
    extra: Vec<(&'static str, OsString)>,
}

/// A declared script that is to run: its declaration and the validators decided on.
struct DeclaredPage {
    found: Arc<Declared>,
    representation: Box<Representation>,
}

impl Page {
    /// The page is a declared script that runs, with the validators the decision was made on.
    fn declare(
        &mut self,
        found: Arc<Declared>,
        representation: Box<Representation>,
        request: &Request,
        now: SystemTime,
    ) {
        if found.declaration.feed {
            let conditions = Conditions::from_request(request, now);
            let client_date = conditions
                .if_modified_since
                .value()
                .map_or(0, |t| unix_seconds(*t));
            self.extra
                .push(("CONDITIONAL_CLIENT_DATE", client_date.to_string().into()));
        }
        self.declared = Some(DeclaredPage {
            found,
            representation,
        });
    }
}

/// The request body for [`Engine::finish`]: the page has it already.
struct NoBody;

impl RequestBody for NoBody {
    fn discard(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn take_input(&mut self) -> Input {
        Input::Null
    }
}

/// Sends a 304 or 412 decided without running the script.
fn answer_now(
    head: &ResponseHead,
    body: &[u8],
    rule: preconditions::Rule,
    ex: &mut Exchange<'_>,
) -> Result<Outcome, Failure> {
    ex.body.discard()?;
    ex.sink.send_head(head)?;
    if !body.is_empty() {
        ex.sink.send_body(body)?;
    }
    ex.sink.finish()?;
    let mut outcome = Outcome::bodiless(head.status, Answer::WithoutRunning(rule));
    outcome.body_bytes = body.len() as u64;
    Ok(outcome)
}

/// A 304 or 412 given without running the script ([`Engine::answer_without_running`]).
#[derive(Debug)]
pub struct AnsweredWithoutRunning {
    /// The response head (a CGI head: `Status:` and the headers).
    pub head: ResponseHead,
    /// The body (the 412's short text; empty for a 304).
    pub body: &'static [u8],
    /// What the log and metrics record.
    pub outcome: Outcome,
}

/// The text of a 412 answered without running the script.
const PRECONDITION_FAILED_TEXT: &str = "412 Precondition Failed\n";

/// What the request's conditions make of a declared script (RFC 9110 §13.2.2).
enum Decided {
    /// A 304 or 412 without running it: its head, its body, and the rule that decided.
    Answer(ResponseHead, &'static [u8], preconditions::Rule),
    /// Run it; its validators and policy as derived for the decision, to be sent with its 200.
    Proceed(Box<Representation>),
}

/// Derives a declared script's validators once and decides on them.
fn decide(
    plan: &Plan,
    declaration: &Declaration,
    request: &Request,
    probe: Option<SystemTime>,
    digests: Option<&DigestCache>,
    now: SystemTime,
) -> Decided {
    let conditions = Conditions::from_request(request, now);
    let representation = representation_at(
        plan,
        declaration,
        request,
        probe,
        digests,
        ScriptStat::Resolved,
        now,
    );
    let verdict = preconditions::evaluate(
        &conditions,
        &representation.derivation.validators,
        &request.method(),
    );
    match verdict.decision {
        Decision::NotModified => {
            let coding = negotiated(declaration, request);
            let mut head = ResponseHead::new(304);
            representation.apply(&mut head, coding, now);
            Decided::Answer(head, b"", verdict.rule)
        }
        Decision::PreconditionFailed => {
            let text = PRECONDITION_FAILED_TEXT;
            Decided::Answer(text_head(412, text.len()), text.as_bytes(), verdict.rule)
        }
        Decision::Proceed => Decided::Proceed(Box::new(representation)),
    }
}

/// The content coding of a declared script's answer: negotiated when it says `compress`.
fn negotiated(declaration: &Declaration, request: &Request) -> Coding {
    if declaration.compress {
        encoding::negotiate(request.header("HTTP_ACCEPT_ENCODING"))
    } else {
        Coding::Identity
    }
}

/// A declared script's 200 once its output has been read: the wrapper's validators (refreshed
/// when the whole page is in), policy and coding.
fn declared_output(
    plan: &Plan,
    declaration: &Declaration,
    representation: &Representation,
    digests: Option<&DigestCache>,
    mut output: Output,
    ex: &mut Exchange<'_>,
) -> Result<Outcome, Failure> {
    let request = ex.request;
    let method = request.method();
    let coding = negotiated(declaration, request);
    let mut coding_used = Coding::Identity;
    if output.head.status == 200 {
        output.head.remove(&OWNED_HEADERS);
        // The original library's refresh: after a change, answer with the new validators; and
        // a page that wrote to its own dependencies while rendering (a wiki's metadata, a new
        // session file) is not sent with validators already stale. A body too large to buffer
        // is still being produced, so only a finished script's can be refreshed. After a GET
        // the probe's answer stands (a second probe per page would double its cost); after a
        // change it is asked again. A failed re-probe keeps the earlier validators rather than
        // turn a change that succeeded into an error.
        let fresh;
        let representation = if !output.complete {
            representation
        } else {
            let probed = if method.is_get_or_head() {
                Ok(representation.derivation.probe_answer())
            } else {
                // After a change, a fresh answer: never one kept from before it.
                Probes::default().answer(plan, declaration, request, ex.errors, ex.abort)
            };
            match probed {
                Ok(probe) => {
                    let now = SystemTime::now();
                    fresh = representation_at(
                        plan,
                        declaration,
                        request,
                        probe,
                        digests,
                        ScriptStat::Again,
                        now,
                    );
                    &fresh
                }
                Err(failure) => {
                    log::line(&format!(
                        "{}: validators not refreshed: {failure}",
                        plan.script.name
                    ));
                    representation
                }
            }
        };
        if !output.head.has("Content-Encoding") {
            coding_used = coding;
        }
        representation.apply(&mut output.head, coding_used, SystemTime::now());
    }
    send(output, coding_used, &method, true, ex)
}

impl Representation {
    /// Adds ETag (of the variant for `coding`), Last-Modified, the cache policy and Vary: the
    /// headers a 304 and a 200 share (Content-Encoding belongs to the 200's body alone).
    pub fn apply(&self, head: &mut ResponseHead, coding: Coding, now: SystemTime) {
        let validators = &self.derivation.validators;
        if let Some(etag) = &validators.etag {
            head.push("ETag", etag.header_value(coding.token()));
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
        if self.session {
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
    declaration: &Declaration,
    request: &Request,
    errors: &ErrorOutput,
    abort: &AbortHandle,
    now: SystemTime,
) -> Result<Representation, Failure> {
    let probe = Probes::default().answer(plan, declaration, request, errors, abort)?;
    Ok(representation_at(
        plan,
        declaration,
        request,
        probe,
        None,
        ScriptStat::Resolved,
        now,
    ))
}

/// How probe answers are had: run each time, or kept for the declaration's `probe_ttl`.
#[derive(Default)]
struct Probes<'a> {
    cache: Option<&'a ProbeCache<SystemTime>>,
}

impl Probes<'_> {
    /// The probe's answer, when the declaration asks for one. With a `probe_ttl` and a cache,
    /// an answer is reused per script, query string and PATH_INFO, and concurrent requests for
    /// the same key share one run.
    fn answer(
        &self,
        plan: &Plan,
        declaration: &Declaration,
        request: &Request,
        errors: &ErrorOutput,
        abort: &AbortHandle,
    ) -> Result<Option<SystemTime>, Failure> {
        if !declaration.probe {
            return Ok(None);
        }
        let Some(cache) = self.cache.filter(|_| !declaration.probe_ttl.is_zero()) else {
            return probe(plan, request, errors, abort).map(Some);
        };
        let key = ProbeKey {
            script: plan.script.real_path.clone(),
            query: request.query().to_vec(),
            path_info: request.var("PATH_INFO").unwrap_or_default().to_vec(),
        };
        let run = || probe(plan, request, errors, abort);
        match cache.get_or_run(&key, declaration.probe_ttl, plan.timeout, run) {
            Ok((answer, served)) => {
                if served != Served::Ran {
                    plan.note_probe_reused();
                }
                Ok(Some(answer))
            }
            Err(ProbeError::Failed(failure)) => Err(failure),
            Err(other) => Err(Failure::ProbeFailed {
                script: plan.script.name.clone(),
                reason: other.to_string(),
            }),
        }
    }
}

/// Which stat of the script its own mtime is read from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScriptStat {
    /// The one made when it was resolved, while nothing has run since (a probe that ran is a
    /// run: the script is stat'ed again after it).
    Resolved,
    /// A new one: the page ran, and may have changed what it depends on.
    Again,
}

/// Validators and policy of a declared script at `now`, with the probe's answer given.
fn representation_at(
    plan: &Plan,
    declaration: &Declaration,
    request: &Request,
    probe: Option<SystemTime>,
    digests: Option<&DigestCache>,
    stat: ScriptStat,
    now: SystemTime,
) -> Representation {
    let unchanged = stat == ScriptStat::Resolved && !declaration.probe;
    let derivation = validators::derive(
        declaration,
        &Inputs {
            script: &plan.script.path,
            script_metadata: unchanged.then_some(&plan.script.metadata),
            request,
            probe,
            digests,
            now,
        },
    );
    let forced_private = declaration.feed || derivation.session_covered;
    let policy = CachePolicy {
        seconds: declaration.cache_seconds,
        privacy: if forced_private {
            Privacy::Private
        } else {
            declaration.cache_privacy
        },
    };
    Representation {
        derivation,
        policy,
        compress: declaration.compress,
        session: declaration.session.is_some(),
    }
}

/// Runs a script without a sidecar; if its own output carries validators that the request's
/// conditions match, the client still gets a 304 (bandwidth saved, not CPU).
fn pass_through(plan: &Plan, output: Output, ex: &mut Exchange<'_>) -> Result<Outcome, Failure> {
    let method = ex.request.method();
    let conditions = Conditions::from_request(ex.request, SystemTime::now());
    let applies = output.head.status == 200 && method.is_get_or_head() && !conditions.is_empty();
    let own =
        validators::from_script_headers(output.head.get("ETag"), output.head.get("Last-Modified"));
    // RFC 9110 §13.1.1: If-Match on output without an ETag is false (unless `*`), so it is
    // evaluated even then.
    if !applies || !(preconditions::has_validators(&own) || conditions.if_match.is_sent()) {
        return send(output, Coding::Identity, &method, false, ex);
    }
    let verdict = preconditions::evaluate(&conditions, &own, &method);
    let Some(status) = verdict.decision.status() else {
        return send(output, Coding::Identity, &method, false, ex);
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
    Ok(Outcome::bodiless(
        status,
        Answer::AfterRunning(verdict.rule),
    ))
}
