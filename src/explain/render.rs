//! The text form of an explanation.

use std::fmt::Write;

use super::{RangeReport, Report, SourceReport};

/// Renders the report for people, one section per question.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "Script     {}", report.script);
    if report.real_path != report.script {
        let _ = writeln!(w, "Real path  {}", report.real_path);
    }
    if let Some(rule) = &report.rule {
        let _ = writeln!(w, "Rule       {rule}");
    }
    match &report.sidecar {
        Some(path) => {
            let _ = writeln!(w, "Sidecar    {path}");
        }
        None if report.declared => {
            let _ = writeln!(w, "Sidecar    none");
        }
        None => {
            let _ = writeln!(
                w,
                "Sidecar    none, and no rule (pass-through: the script runs on every request)"
            );
        }
    }
    if report.declared {
        let set: Vec<String> = report
            .fields
            .iter()
            .filter(|(_, origin)| origin != "default")
            .map(|(field, origin)| format!("{field} ({origin})"))
            .collect();
        if !set.is_empty() {
            let _ = writeln!(w, "Declared   {}", set.join(", "));
        }
    }
    let request = &report.request;
    let _ = write!(w, "Request    {}", request.method);
    if !request.query.is_empty() {
        let _ = write!(w, " ?{}", request.query);
    }
    let _ = writeln!(w);
    for (name, value) in &request.headers {
        let _ = writeln!(w, "           {name}: {value}");
    }
    let _ = writeln!(w, "Now        {}", report.now.http_date);

    if report.declared {
        let _ = writeln!(
            w,
            "\nLast-Modified sources (the newest counts, clamped to now)"
        );
        for source in &report.last_modified_sources {
            let _ = writeln!(w, "  {:<28} {}", source_label(source), source_time(source));
        }
        let clamp = if report.clamped_to_now {
            "yes: the newest source is in the future, Last-Modified is now"
        } else {
            "not needed"
        };
        let _ = writeln!(w, "  {:<28} {clamp}", "clamp to now");

        let _ = writeln!(w, "\nValidators");
        let last_modified = report
            .last_modified
            .as_ref()
            .map_or("none (no source had a time)", |s| s.http_date.as_str());
        let _ = writeln!(w, "  {:<14} {last_modified}", "Last-Modified");
        let etag = report.etag.as_deref().unwrap_or("none");
        let _ = writeln!(w, "  {:<14} {etag}", "ETag");
        for (coding, tag) in &report.etag_variants {
            let _ = writeln!(w, "  {:<14} {tag}", format!("ETag ({coding})"));
        }
        if report.session_covered {
            let _ = writeln!(
                w,
                "  the session cookie and session file are part of the ETag"
            );
        }

        let _ = writeln!(
            w,
            "\nHeaders the wrapper sets on the 200 and the 304 (coding: {})",
            report.coding
        );
        for (name, value) in &report.headers {
            let _ = writeln!(w, "  {name}: {value}");
        }
    }

    let _ = writeln!(w, "\nConditions");
    for condition in &report.conditions {
        let Some(raw) = &condition.raw else {
            let _ = writeln!(w, "  {:<20} absent", condition.header);
            continue;
        };
        let mut shown = match condition.state {
            "ignored" => "ignored".to_string(),
            _ => "parsed".to_string(),
        };
        if let Some(value) = condition.value.as_ref().filter(|v| *v != raw) {
            let _ = write!(shown, " as {value}");
        }
        if condition.state == "not_evaluated" {
            shown.push_str(", not evaluated");
        }
        if let Some(note) = &condition.note {
            let _ = write!(shown, ": {note}");
        }
        let _ = writeln!(w, "  {:<20} {raw}  → {shown}", condition.header);
    }

    let _ = writeln!(w, "\nDecision   {}", report.decision.summary);
    if let Some(rule) = &report.decision.rule {
        let _ = writeln!(w, "           {rule}");
    }
    if let Some(range) = &report.range {
        range_text(w, range);
    }
    out
}

fn range_text(w: &mut String, range: &RangeReport) {
    let _ = writeln!(w, "\nRange (RFC 9110 §14, §13.1.5)");
    let shown =
        |raw: &Option<String>, state: &str, value: Option<&String>, note: Option<&String>| {
            let Some(raw) = raw else {
                return "absent".to_string();
            };
            let mut shown = format!("{raw}  → {state}");
            if let Some(value) = value.filter(|v| *v != raw) {
                let _ = write!(shown, " as {value}");
            }
            if let Some(note) = note {
                let _ = write!(shown, ": {note}");
            }
            shown
        };
    let _ = writeln!(
        w,
        "  {:<20} {}",
        "Range",
        shown(&range.raw, range.state, None, range.note.as_ref())
    );
    for spec in &range.ranges {
        let _ = writeln!(w, "    {:<18} {}", spec.spec, spec.serves);
    }
    let if_range = &range.if_range;
    let state = match if_range.holds {
        Some(true) => "matches",
        Some(false) => "does not match",
        None => if_range.state,
    };
    let _ = writeln!(
        w,
        "  {:<20} {}",
        "If-Range",
        shown(
            &if_range.raw,
            state,
            if_range.value.as_ref(),
            if_range.note.as_ref()
        )
    );
    let _ = writeln!(w, "  → {}", range.summary);
}

fn source_label(source: &SourceReport) -> String {
    match source.source {
        "sidecar" => "sidecar last_modified".to_string(),
        "dependency" => {
            let path = source.path.as_deref().unwrap_or("?");
            let name = std::path::Path::new(path)
                .file_name()
                .map_or(path.into(), |n| n.to_string_lossy());
            format!("depends_on {name}")
        }
        "probe" => "probe answer".to_string(),
        "script_file" => "script file mtime".to_string(),
        other => other.to_string(),
    }
}

fn source_time(source: &SourceReport) -> String {
    match &source.time {
        None if source.source == "probe" => "no answer".to_string(),
        None => "missing".to_string(),
        Some(stamp) => {
            let newest = if source.newest { "  ← newest" } else { "" };
            format!("{} ({}){newest}", stamp.http_date, stamp.unix)
        }
    }
}
