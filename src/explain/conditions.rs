//! Each precondition header as `Conditions::from_request` parsed it, and whether RFC 9110
//! §13.2.2 gets to evaluate it: the notes only explain; `preconditions::evaluate` decides.
//!
//! "ignored" notes are `Header::Ignored`'s own reasons. The "not evaluated" notes restate the
//! skip rules of `preconditions` (which keeps them private to its per-header functions); the
//! tests below check every note against `preconditions::evaluate` over every combination of
//! headers, validators and methods, so the two cannot drift apart silently.

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::etag::EntityTag;
    use crate::preconditions::{Rule, Verdict, evaluate};

    const T: u64 = 1_000_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn tags(raw: &str) -> Header<EtagList> {
        Header::Value(EtagList::parse(raw.as_bytes()).expect("a valid list"))
    }

    /// Every form a tag header takes: absent, unusable, matching `"abc"`, matching nothing.
    fn tag_forms() -> Vec<Header<EtagList>> {
        vec![
            Header::Absent,
            Header::Ignored("malformed"),
            tags(r#""abc""#),
            tags(r#""zzz""#),
        ]
    }

    /// Every form a date header takes: absent, unusable, before and after `T`.
    fn date_forms() -> Vec<Header<SystemTime>> {
        vec![
            Header::Absent,
            Header::Ignored("not a valid HTTP-date"),
            Header::Value(at(T - 100)),
            Header::Value(at(T + 100)),
        ]
    }

    /// `c` with header `index` (in report order) replaced by its `form`-th form.
    fn with(c: &Conditions, index: usize, form: usize) -> Conditions {
        let mut c = c.clone();
        match index {
            0 => c.if_match = tag_forms().swap_remove(form),
            1 => c.if_unmodified_since = date_forms().swap_remove(form),
            2 => c.if_none_match = tag_forms().swap_remove(form),
            _ => c.if_modified_since = date_forms().swap_remove(form),
        }
        c
    }

    /// The §13.2.2 step a rule belongs to; a header's step is its index + 1.
    fn step(rule: Rule) -> usize {
        match rule {
            Rule::IfMatchFailed => 1,
            Rule::IfUnmodifiedSinceFailed => 2,
            Rule::IfNoneMatchMatched
            | Rule::IfNoneMatchMatchedUnsafe
            | Rule::IfNoneMatchNoMatch => 3,
            Rule::IfModifiedSinceNotModified | Rule::IfModifiedSinceModified => 4,
            Rule::NoConditionApplies => 5,
        }
    }

    fn all_conditions() -> Vec<Conditions> {
        let mut all = Vec::new();
        for im in 0..4 {
            for ius in 0..4 {
                for inm in 0..4 {
                    for ims in 0..4 {
                        all.push(Conditions {
                            if_match: tag_forms().swap_remove(im),
                            if_unmodified_since: date_forms().swap_remove(ius),
                            if_none_match: tag_forms().swap_remove(inm),
                            if_modified_since: date_forms().swap_remove(ims),
                        });
                    }
                }
            }
        }
        all
    }

    fn all_validators() -> Vec<Validators> {
        let (etag, time) = (Some(EntityTag::strong("abc")), Some(at(T)));
        vec![
            Validators {
                etag: etag.clone(),
                last_modified: time,
            },
            Validators {
                etag,
                last_modified: None,
            },
            Validators {
                etag: None,
                last_modified: time,
            },
            Validators {
                etag: None,
                last_modified: None,
            },
        ]
    }

    #[test]
    fn every_note_agrees_with_preconditions_evaluate() {
        let request = Request::new(Vec::new());
        let methods = [Method::Get, Method::Head, Method::Other("POST".into())];
        for c in all_conditions() {
            for v in all_validators() {
                for m in &methods {
                    let verdict: Verdict = evaluate(&c, &v, m);
                    let reports = reports(&c, &request, m, Some(&v));
                    for (i, r) in reports.iter().enumerate() {
                        let alternatives: Vec<Verdict> =
                            (0..4).map(|f| evaluate(&with(&c, i, f), &v, m)).collect();
                        let case = format!("{} {:?}\n{c:?}\n{v:?} {m:?}", r.header, r.note);
                        if r.state == "not_evaluated" {
                            // Skipped here: no form of this header changes the decision.
                            assert!(alternatives.iter().all(|a| *a == verdict), "{case}");
                        }
                        if r.state == "ignored" && matches!(i, 1 | 3) {
                            // An unusable date counts as absent.
                            assert_eq!(alternatives[0], verdict, "{case}");
                        }
                        if r.state == "parsed" && step(verdict.rule) > i {
                            // Evaluated (and reached): some form of it changes the decision.
                            assert!(alternatives.iter().any(|a| *a != verdict), "{case}");
                        }
                        if i == 0 && r.state == "ignored" {
                            assert_eq!(verdict.rule, Rule::IfMatchFailed, "{case}");
                        }
                    }
                }
            }
        }
    }
}
