//! The Range decision as far as it is known without running the script: the range set and
//! If-Range as `range::RangeConditions` parsed them, and what `range::select` decides. The
//! body's length is only known once the script ran, so each range says what it would serve.

use serde::Serialize;

use crate::range::{
    self, IfRange, IfRangeCheck, RangeConditions, RangeDecision, RangeHeader, RangeSpec, Selection,
};
use crate::request::{Header, Method, Request};
use crate::response::ResponseHead;
use crate::timestamp::format_http_date;
use std::time::SystemTime;

/// Range and If-Range, and what they would do.
#[derive(Debug, Clone, Serialize)]
pub struct RangeReport {
    /// Range as sent.
    pub raw: Option<String>,
    /// `absent`, `ignored`, `malformed` or `parsed`.
    pub state: &'static str,
    /// Why it was ignored or does not parse.
    pub note: Option<String>,
    /// Each range-spec, in the order sent.
    pub ranges: Vec<SpecReport>,
    /// If-Range.
    pub if_range: IfRangeReport,
    /// `whole` (200), `unsatisfiable` (416), `ranges` (the body's length decides),
    /// `not_applied` (no sidecar) or `not_reached` (answered before Range counts).
    pub decision: &'static str,
    /// 200 or 416 when known without the body.
    pub status: Option<u16>,
    /// One line for people.
    pub summary: String,
}

/// One range-spec.
#[derive(Debug, Clone, Serialize)]
pub struct SpecReport {
    /// As normalised (`0-9`, `100-`, `-500`).
    pub spec: String,
    /// What it serves, depending on the body's length.
    pub serves: String,
}

/// If-Range.
#[derive(Debug, Clone, Serialize)]
pub struct IfRangeReport {
    /// As sent.
    pub raw: Option<String>,
    /// `absent`, `ignored` or `parsed`.
    pub state: &'static str,
    /// The entity-tag or date parsed.
    pub value: Option<String>,
    /// Whether it holds against the response's validators; `None` when not evaluated.
    pub holds: Option<bool>,
    /// Why it does not hold, or why it was ignored.
    pub note: Option<String>,
}

/// What explain knows about the response Range would apply to.
pub struct Response<'a> {
    /// The head of the 200 the wrapper would send (its validators), `None` without a sidecar.
    pub head: Option<&'a ResponseHead>,
    /// The coding the body would be sent in (ranges count its bytes).
    pub coding: &'static str,
    /// The preconditions let the script run (otherwise 304/412 come first).
    pub runs_script: bool,
}

/// The report, `None` when the request carries neither Range nor If-Range.
pub fn report(
    request: &Request,
    method: &Method,
    response: &Response<'_>,
    now: SystemTime,
) -> Option<RangeReport> {
    let conditions = RangeConditions::from_request(request);
    if conditions.is_empty() {
        return None;
    }
    let raw = |cgi: &str| {
        request
            .var(cgi)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let (state, note, ranges) = match &conditions.range {
        RangeHeader::Absent => ("absent", None, Vec::new()),
        RangeHeader::Ignored(why) => ("ignored", Some(why.to_string()), Vec::new()),
        RangeHeader::Malformed(why) => ("malformed", Some(why.to_string()), Vec::new()),
        RangeHeader::Bytes(specs) => ("parsed", None, specs.iter().map(spec_report).collect()),
    };
    let mut report = RangeReport {
        raw: raw("HTTP_RANGE"),
        state,
        note,
        ranges,
        if_range: if_range_report(raw("HTTP_IF_RANGE"), &conditions.if_range),
        decision: "not_applied",
        status: None,
        summary: String::new(),
    };
    let Some(head) = response.head else {
        report.summary = "the wrapper applies Range only to declared scripts; this one's own \
                          response (it sees HTTP_RANGE) passes through"
            .to_string();
        return Some(report);
    };
    let current = range::validators_of(head);
    if conditions.range == RangeHeader::Absent {
        add_note(
            &mut report.if_range,
            "ignored without Range (RFC 9110 §13.1.5)",
        );
    } else if let IfRangeCheck::Fails(why) =
        range::check_if_range(&conditions.if_range, &current, now)
    {
        report.if_range.holds = Some(false);
        add_note(&mut report.if_range, why);
    } else if conditions.if_range.is_sent() {
        report.if_range.holds = Some(true);
    }
    if !response.runs_script {
        report.decision = "not_reached";
        report.summary = "not reached: the preconditions answer first".to_string();
        return Some(report);
    }
    let coded = match response.coding {
        "identity" => String::new(),
        coding => format!(" (counted in the bytes of the {coding}-encoded body)"),
    };
    (report.decision, report.status, report.summary) =
        match range::select(&conditions, method, &current, now) {
            Selection::Decided(RangeDecision::Unsatisfiable(why)) => (
                "unsatisfiable",
                Some(416),
                format!("416 Range Not Satisfiable with Content-Range: bytes */LENGTH: {why}"),
            ),
            Selection::Decided(RangeDecision::Whole(why)) => {
                ("whole", Some(200), format!("the whole 200: {why}"))
            }
            Selection::Decided(other) => ("ranges", None, format!("{other:?}")),
            Selection::Ranges(specs) => {
                let matched = if report.if_range.holds == Some(true) {
                    "If-Range matches; "
                } else {
                    ""
                };
                (
                    "ranges",
                    None,
                    format!(
                        "{matched}{}{coded}, when the body is buffered whole (a streamed body \
                         ignores Range)",
                        by_length(specs)
                    ),
                )
            }
        };
    Some(report)
}

/// What the ranges give for the shortest body that holds every one as asked. With only fixed
/// positions, every longer body gives the same; a suffix moves with the length.
fn by_length(specs: &[RangeSpec]) -> String {
    let shortest = specs
        .iter()
        .map(|spec| match *spec {
            RangeSpec::From {
                last: Some(last), ..
            } => last.saturating_add(1),
            RangeSpec::From { first, last: None } => first.saturating_add(1),
            RangeSpec::Suffix(length) => length,
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let moves = |s: &RangeSpec| matches!(s, RangeSpec::Suffix(n) if *n > 0);
    let fixed = specs.len() == 1 || !specs.iter().any(moves);
    let condition = if fixed {
        format!("if the body is at least {}", bytes(shortest))
    } else {
        format!("with a body of {}", bytes(shortest))
    };
    let list = |ranges: &[range::ByteRange]| {
        let shown: Vec<String> = ranges
            .iter()
            .map(|r| format!("{}-{}", r.first, r.last))
            .collect();
        shown.join(", ")
    };
    match range::resolve(specs, shortest) {
        RangeDecision::Single(r) => {
            format!("206 with range {} would be served {condition}", list(&[r]))
        }
        RangeDecision::Multiple(ranges) => format!(
            "206 multipart/byteranges with ranges {} would be served {condition}",
            list(&ranges)
        ),
        RangeDecision::Whole(why) => format!("the whole 200 {condition}: {why}"),
        RangeDecision::Unsatisfiable(why) => format!("416 whatever the body: {why}"),
    }
}

fn spec_report(spec: &RangeSpec) -> SpecReport {
    let unsatisfiable = |first: u64| match first {
        0 => "unsatisfiable when it is empty".to_string(),
        n => format!("unsatisfiable when it has {} or fewer", bytes(n)),
    };
    let serves = match *spec {
        RangeSpec::From {
            first,
            last: Some(last),
        } if first == last => format!("byte {first}; {}", unsatisfiable(first)),
        RangeSpec::From {
            first,
            last: Some(last),
        } => format!(
            "bytes {first}-{last} when the body has at least {}, up to its end when shorter; {}",
            bytes(last.saturating_add(1)),
            unsatisfiable(first)
        ),
        RangeSpec::From { first, last: None } => {
            format!("from byte {first} to the end; {}", unsatisfiable(first))
        }
        RangeSpec::Suffix(0) => "nothing: a suffix of length 0 is never satisfiable".to_string(),
        RangeSpec::Suffix(n) => format!("the last {n} bytes (the whole body when shorter)"),
    };
    SpecReport {
        spec: spec.to_string(),
        serves,
    }
}

fn if_range_report(raw: Option<String>, parsed: &Header<IfRange>) -> IfRangeReport {
    let (state, value, note) = match parsed {
        Header::Absent => ("absent", None, None),
        Header::Ignored(why) => ("ignored", None, Some(why.to_string())),
        Header::Value(IfRange::Tag(tag)) => ("parsed", Some(tag.to_string()), None),
        Header::Value(IfRange::Date(date)) => ("parsed", Some(format_http_date(*date)), None),
    };
    IfRangeReport {
        raw,
        state,
        value,
        holds: None,
        note,
    }
}

fn bytes(count: u64) -> String {
    match count {
        1 => "1 byte".to_string(),
        n => format!("{n} bytes"),
    }
}

fn add_note(report: &mut IfRangeReport, note: &str) {
    report.note = Some(match report.note.take() {
        Some(before) => format!("{before}; {note}"),
        None => note.to_string(),
    });
}
