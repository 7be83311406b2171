//! Each precondition header as `Conditions::from_request` parsed it, and whether RFC 9110
//! §13.2.2 gets to evaluate it: the notes only explain; `preconditions::evaluate` decides.

use std::time::SystemTime;

use super::ConditionReport;
use crate::etag::EtagList;
use crate::request::{Conditions, Header, Method, Request};
use crate::timestamp::format_http_date;
use crate::validators::Validators;

/// Each precondition header as `Conditions::from_request` understood it, and whether
/// RFC 9110 §13.2.2 gets to evaluate it for this method and these headers.
pub fn reports(
    conditions: &Conditions,
    request: &Request,
    method: &Method,
    validators: Option<&Validators>,
) -> Vec<ConditionReport> {
    let raw = |cgi: &str| {
        request
            .var(cgi)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let no_last_modified = validators.is_some_and(|v| v.last_modified.is_none());
    let mut reports = Vec::with_capacity(4);

    let mut report = tags_report("If-Match", raw("HTTP_IF_MATCH"), &conditions.if_match);
    if matches!(conditions.if_match, Header::Ignored(_)) {
        append_note(
            &mut report,
            "an unusable If-Match matches nothing, so step 1 fails (412)",
        );
    }
    reports.push(report);

    let mut report = date_report(
        "If-Unmodified-Since",
        raw("HTTP_IF_UNMODIFIED_SINCE"),
        &conditions.if_unmodified_since,
    );
    if report.state == "parsed" {
        if conditions.if_match.is_sent() {
            not_evaluated(
                &mut report,
                "If-Match is present; step 2 applies only without it",
            );
        } else if no_last_modified {
            not_evaluated(&mut report, "there is no Last-Modified to compare with");
        }
    }
    reports.push(report);

    reports.push(tags_report(
        "If-None-Match",
        raw("HTTP_IF_NONE_MATCH"),
        &conditions.if_none_match,
    ));

    let mut report = date_report(
        "If-Modified-Since",
        raw("HTTP_IF_MODIFIED_SINCE"),
        &conditions.if_modified_since,
    );
    if report.state == "parsed" {
        if !method.is_get_or_head() {
            let note = format!(
                "step 4 applies only to GET and HEAD, not {}",
                method.as_str()
            );
            not_evaluated(&mut report, &note);
        } else if conditions.if_none_match.is_sent() {
            not_evaluated(
                &mut report,
                "If-None-Match is present; step 4 applies only without it",
            );
        } else if no_last_modified {
            not_evaluated(&mut report, "there is no Last-Modified to compare with");
        }
    }
    reports.push(report);
    reports
}

fn tags_report(
    header: &'static str,
    raw: Option<String>,
    parsed: &Header<EtagList>,
) -> ConditionReport {
    header_report(header, raw, parsed, |list| match list {
        EtagList::Any => "*".to_string(),
        EtagList::Tags(tags) => tags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn date_report(
    header: &'static str,
    raw: Option<String>,
    parsed: &Header<SystemTime>,
) -> ConditionReport {
    header_report(header, raw, parsed, |&time| format_http_date(time))
}

fn header_report<T>(
    header: &'static str,
    raw: Option<String>,
    parsed: &Header<T>,
    show: impl Fn(&T) -> String,
) -> ConditionReport {
    let (state, value, note) = match parsed {
        Header::Absent => ("absent", None, None),
        Header::Ignored(reason) => ("ignored", None, Some((*reason).to_string())),
        Header::Value(v) => ("parsed", Some(show(v)), None),
    };
    ConditionReport {
        header,
        raw,
        state,
        value,
        note,
    }
}

fn not_evaluated(report: &mut ConditionReport, why: &str) {
    report.state = "not_evaluated";
    append_note(report, why);
}

fn append_note(report: &mut ConditionReport, note: &str) {
    report.note = Some(match report.note.take() {
        Some(before) => format!("{before}; {note}"),
        None => note.to_string(),
    });
}
