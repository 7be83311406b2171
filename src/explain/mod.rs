//! `explain`: prints a script's validators (and where each came from), the request's
//! conditions (as parsed, or why ignored) and the decision with the RFC 9110 §13.2.2 step
//! that made it, without running the script's body.
//!
//! Nothing here decides anything: the validators come from the engine's `represent` (which
//! runs the probe and `validators::derive`), the conditions from `Conditions::from_request`
//! and the decision from `preconditions::evaluate`, exactly as a request would see them.

mod conditions;
mod range;
mod render;

pub use range::{IfRangeReport, RangeReport, SpecReport};

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use serde::Serialize;

use crate::backend::{AbortHandle, ErrorOutput};
use crate::cgi_head::is_token_char;
use crate::declaration::Origin;
use crate::declarations::Declarations;
use crate::encoding::{self, Coding};
use crate::engine::{self, Job};
use crate::front_end;
use crate::preconditions::{self, Decision};
use crate::request::{Conditions, Request};
use crate::response::ResponseHead;
use crate::script::Script;
use crate::sidecar::sidecar_path;
use crate::timestamp::{format_http_date, unix_seconds};
use crate::validators::{Candidate, Source};

/// Variables a web server would set for the wrapper, passed on when explain has them.
const PASSED_FROM_ENV: [&str; 2] = ["CONDITIONAL_INTERPRETER", "CONDITIONAL_TIMEOUT"];

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
    /// `--rules FILE`: the site rules file the script may be declared by.
    pub rules: Option<PathBuf>,
}

/// A point in time, as an HTTP-date and as unix seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stamp {
    /// IMF-fixdate.
    pub http_date: String,
    /// Unix seconds.
    pub unix: u64,
}

impl Stamp {
    fn new(time: SystemTime) -> Stamp {
        Stamp {
            http_date: format_http_date(time),
            unix: unix_seconds(time),
        }
    }
}

/// The request explained.
#[derive(Debug, Clone, Serialize)]
pub struct RequestReport {
    /// REQUEST_METHOD.
    pub method: String,
    /// QUERY_STRING.
    pub query: String,
    /// The headers given, repeats joined.
    pub headers: Vec<(String, String)>,
}

/// One candidate for Last-Modified.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// `sidecar`, `dependency`, `probe` or `script_file`.
    pub source: &'static str,
    /// The dependency's path or the script's path.
    pub path: Option<String>,
    /// The time found; `None` when missing.
    pub time: Option<Stamp>,
    /// This candidate is the newest (before clamping).
    pub newest: bool,
}

/// One precondition header.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    /// The header's name.
    pub header: &'static str,
    /// The value as sent, `None` when absent.
    pub raw: Option<String>,
    /// `absent`, `parsed`, `ignored` or `not_evaluated`.
    pub state: &'static str,
    /// The parsed value.
    pub value: Option<String>,
    /// Why it was ignored or is not evaluated.
    pub note: Option<String>,
}

/// What the wrapper answers.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionReport {
    /// `not_modified`, `precondition_failed`, `proceed` or `pass_through`.
    pub decision: &'static str,
    /// 304 or 412 when answered without the script; `None` when the script's output decides.
    pub status: Option<u16>,
    /// Whether the script's body runs.
    pub runs_script: bool,
    /// The step of RFC 9110 §13.2.2 (the `Rule`), for a declared script.
    pub rule: Option<String>,
    /// The rule's name (`IfNoneMatchMatched`, ...), stable for scripts.
    pub rule_id: Option<String>,
    /// One line for people.
    pub summary: String,
}

/// Everything explain prints; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The script's path as given (the ETag covers it).
    pub script: String,
    /// Its real path.
    pub real_path: String,
    /// A rule or a sidecar declares it.
    pub declared: bool,
    /// The sidecar's path, when one sits next to the script.
    pub sidecar: Option<String>,
    /// The rule that applied: `rule N (match "PATTERN", line L) of FILE`.
    pub rule: Option<String>,
    /// Where each declared field came from: `default`, `rules [defaults]`, `rule N`, `sidecar`.
    pub fields: Vec<(String, String)>,
    /// The request explained.
    pub request: RequestReport,
    /// The time the explanation was made.
    pub now: Stamp,
    /// Last-Modified candidates, in the order consulted.
    pub last_modified_sources: Vec<SourceReport>,
    /// The newest candidate was later than now and was clamped to now.
    pub clamped_to_now: bool,
    /// Last-Modified.
    pub last_modified: Option<Stamp>,
    /// The identity representation's ETag.
    pub etag: Option<String>,
    /// ETags of the encoded variants, when the sidecar has `compress`.
    pub etag_variants: Vec<(String, String)>,
    /// The visitor's session is folded into the ETag.
    pub session_covered: bool,
    /// The coding this request's Accept-Encoding gets.
    pub coding: &'static str,
    /// The headers the wrapper sets on this script's 200 and 304, for this request.
    pub headers: Vec<(String, String)>,
    /// The four precondition headers.
    pub conditions: Vec<ConditionReport>,
    /// The decision.
    pub decision: DecisionReport,
    /// Range and If-Range, when either is sent.
    pub range: Option<RangeReport>,
}

/// Prints the explanation; a script that cannot be served (missing, bad sidecar, failed
/// probe) prints the error and exits 1.
pub fn run(options: Options) -> anyhow::Result<ExitCode> {
    match explain(&options) {
        Ok(report) => {
            if options.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render::text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if options.json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            Err(e)
        }
    }
}

/// Where a field came from, as explain prints it.
fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::Default => "default".into(),
        Origin::RulesDefault => "rules [defaults]".into(),
        Origin::Rule(rule) => format!("rule {}", rule.number),
        Origin::Sidecar => "sidecar".into(),
    }
}

/// Gathers the explanation.
pub fn explain(options: &Options) -> anyhow::Result<Report> {
    let headers = parse_headers(&options.headers)?;
    let method_name = options.method.trim().to_ascii_uppercase();
    anyhow::ensure!(
        !method_name.is_empty() && method_name.bytes().all(is_token_char),
        "--method {:?} is not an HTTP method",
        options.method
    );
    let named = std::path::absolute(&options.script)?;
    let script = Script::resolve(&named, &[])?;
    let request = build_request(&script, &method_name, &options.query, &headers);
    let declarations = match &options.rules {
        Some(path) => Declarations::with_rules(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Declarations::sidecars_only(),
    };
    let found = declarations.declared_for(&script)?;
    let rules_file = declarations.rules().map(|r| display(r.file()));
    let rule = found.as_ref().and_then(|d| d.rule.as_ref()).map(|r| {
        format!(
            "rule {} (match {:?}, line {}) of {}",
            r.number,
            r.pattern,
            r.line,
            rules_file.as_deref().unwrap_or_default()
        )
    });
    let fields = found
        .as_ref()
        .map(|d| {
            d.provenance
                .iter()
                .map(|(field, origin)| (field.name().to_string(), origin_text(origin)))
                .collect()
        })
        .unwrap_or_default();
    let sidecar_file = sidecar_path(&script.path);
    let sidecar_present = sidecar_file.exists();
    let sidecar = found.map(|d| d.declaration.clone());
    let now = SystemTime::now();
    let method = request.method();
    let conditions = Conditions::from_request(&request, now);
    let mut report = Report {
        script: display(&script.path),
        real_path: display(&script.real_path),
        declared: sidecar.is_some(),
        sidecar: sidecar_present.then(|| display(&sidecar_file)),
        rule,
        fields,
        request: RequestReport {
            method: method_name,
            query: options.query.clone(),
            headers,
        },
        now: Stamp::new(now),
        last_modified_sources: Vec::new(),
        clamped_to_now: false,
        last_modified: None,
        etag: None,
        etag_variants: Vec::new(),
        session_covered: false,
        coding: "identity",
        headers: Vec::new(),
        conditions: Vec::new(),
        decision: pass_through_decision(),
        range: None,
    };
    let Some(sidecar) = sidecar else {
        report.conditions = conditions::reports(&conditions, &request, &method, None);
        let response = range::Response {
            head: None,
            coding: "identity",
            runs_script: true,
        };
        report.range = range::report(&request, &method, &response, now);
        return Ok(report);
    };
    let job = Job {
        request: &request,
        script: Some(script.path.clone()),
        interpreter: None,
        timeout: None,
        // The probe gets the PATH a front end's scripts get.
        base_env: front_end::base_env(),
    };
    let plan = engine::plan(
        &job,
        script.clone(),
        Some(&sidecar),
        &Default::default(),
        None,
    )?;
    let representation = engine::represent(
        &plan,
        &sidecar,
        &request,
        &ErrorOutput::Inherit,
        &AbortHandle::new(),
        now,
    )?;
    let derivation = &representation.derivation;
    let validators = &derivation.validators;
    let newest = derivation.candidates.iter().filter_map(|c| c.time).max();
    report.last_modified_sources = derivation
        .candidates
        .iter()
        .map(|c| source_report(c, &script.path, newest))
        .collect();
    report.clamped_to_now = derivation.clamped;
    report.last_modified = validators.last_modified.map(Stamp::new);
    report.etag = validators.etag.as_ref().map(ToString::to_string);
    if sidecar.compress
        && let Some(etag) = &validators.etag
    {
        for coding in [Coding::Gzip, Coding::Deflate] {
            if let Some(token) = coding.token() {
                report
                    .etag_variants
                    .push((token.to_string(), etag.variant(token).to_string()));
            }
        }
    }
    report.session_covered = derivation.session_covered;
    // As the engine chooses it: only with `compress`, from Accept-Encoding.
    let coding = if sidecar.compress {
        encoding::negotiate(request.header("HTTP_ACCEPT_ENCODING"))
    } else {
        Coding::Identity
    };
    report.coding = coding.token().unwrap_or("identity");
    let mut head = ResponseHead::new(200);
    representation.apply(&mut head, coding, now);
    report.headers = head
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    report.conditions = conditions::reports(&conditions, &request, &method, Some(validators));
    let verdict = preconditions::evaluate(&conditions, validators, &method);
    let (decision, summary) = match verdict.decision {
        Decision::NotModified => (
            "not_modified",
            "304 Not Modified, without running the script",
        ),
        Decision::PreconditionFailed => (
            "precondition_failed",
            "412 Precondition Failed, without running the script",
        ),
        Decision::Proceed => ("proceed", "the script runs and its response is sent"),
    };
    report.decision = DecisionReport {
        decision,
        status: verdict.decision.status(),
        runs_script: verdict.decision == Decision::Proceed,
        rule: Some(verdict.rule.to_string()),
        rule_id: Some(format!("{:?}", verdict.rule)),
        summary: summary.to_string(),
    };
    let response = range::Response {
        head: Some(&head),
        coding: report.coding,
        runs_script: verdict.decision == Decision::Proceed,
    };
    report.range = range::report(&request, &method, &response, now);
    Ok(report)
}

fn pass_through_decision() -> DecisionReport {
    DecisionReport {
        decision: "pass_through",
        status: None,
        runs_script: true,
        rule: None,
        rule_id: None,
        summary: "no sidecar: the script runs on every request; if its own output carries \
                  ETag or Last-Modified, these conditions are evaluated against them after \
                  it runs (a 304 saves bandwidth, not CPU)"
            .to_string(),
    }
}

fn source_report(candidate: &Candidate, script: &Path, newest: Option<SystemTime>) -> SourceReport {
    let (source, path) = match &candidate.source {
        Source::Sidecar => ("sidecar", None),
        Source::Dependency(path) => ("dependency", Some(display(path))),
        Source::Probe => ("probe", None),
        Source::ScriptFile => ("script_file", Some(display(script))),
    };
    SourceReport {
        source,
        path,
        time: candidate.time.map(Stamp::new),
        newest: candidate.time.is_some() && candidate.time == newest,
    }
}

/// `Name: value` pairs from `--header`, repeats joined with `, ` (`; ` for Cookie).
fn parse_headers(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in raw {
        let Some((name, value)) = line.split_once(':') else {
            anyhow::bail!("--header {line:?} is not 'Name: value'");
        };
        let name = name.trim();
        anyhow::ensure!(
            !name.is_empty() && name.bytes().all(is_token_char),
            "--header {line:?}: {name:?} is not a header name"
        );
        let value = value.trim();
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((n, joined)) => {
                joined.push_str(if n.eq_ignore_ascii_case("cookie") {
                    "; "
                } else {
                    ", "
                });
                joined.push_str(value);
            }
            None => headers.push((name.to_string(), value.to_string())),
        }
    }
    Ok(headers)
}

/// The CGI variables a web server would set for this request (RFC 3875 §4.1).
fn build_request(
    script: &Script,
    method: &str,
    query: &str,
    headers: &[(String, String)],
) -> Request {
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut set = |name: &str, value: &[u8]| vars.push((name.as_bytes().to_vec(), value.to_vec()));
    let script_name = format!("/{}", script.name);
    let request_uri = if query.is_empty() {
        script_name.clone()
    } else {
        format!("{script_name}?{query}")
    };
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SERVER_PROTOCOL", b"HTTP/1.1");
    set("SERVER_NAME", b"localhost");
    set("REQUEST_METHOD", method.as_bytes());
    set("QUERY_STRING", query.as_bytes());
    set("REQUEST_URI", request_uri.as_bytes());
    set("SCRIPT_NAME", script_name.as_bytes());
    set("SCRIPT_FILENAME", script.path.as_os_str().as_bytes());
    set("DOCUMENT_ROOT", script.folder().as_os_str().as_bytes());
    for (name, value) in headers {
        let cgi = match name.to_ascii_lowercase().as_str() {
            "content-type" => "CONTENT_TYPE".to_string(),
            "content-length" => "CONTENT_LENGTH".to_string(),
            _ => format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")),
        };
        set(&cgi, value.as_bytes());
    }
    for name in PASSED_FROM_ENV {
        if let Some(value) = std::env::var_os(name) {
            set(name, value.as_bytes());
        }
    }
    Request::new(vars)
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
