//! Lines to the wrapper's stderr (the web server's error log, or the journal): messages, the
//! access lines of `serve` and a script's stderr lines, as text or, with `--log-format json`,
//! one JSON object per line for operators who ship logs. Never panicking when stderr is closed
//! or broken, as `eprintln!` would.
//!
//! Every JSON line carries `time` (RFC 3339, UTC) and `event` (`message`, `access` or
//! `script_stderr`); the other fields are named for each event below. JSON escaping covers
//! control characters, so no field can start a line of its own.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// How lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `http-conditional: MESSAGE`, and the access line as words.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether lines are JSON: set once at start-up, read by every line after.
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the format of every line written from now on.
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

/// The format lines are written in.
pub fn format() -> Format {
    match JSON.load(Ordering::Relaxed) {
        true => Format::Json,
        false => Format::Text,
    }
}

/// Writes `http-conditional: TEXT` as one line, or `{"event":"message","message":TEXT}`.
pub fn line(text: &str) {
    match format() {
        Format::Text => {
            let mut out = Vec::with_capacity(text.len() + 20);
            out.extend_from_slice(b"http-conditional: ");
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
            write(&out);
        }
        Format::Json => json(&Message {
            time: now(),
            event: "message",
            message: text,
        }),
    }
}

/// One request as `serve` answered it.
#[derive(Debug, Clone, Serialize)]
pub struct Access<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request target (path and query).
    pub target: &'a str,
    /// The status sent.
    pub status: u16,
    /// How it was decided, as words (`ran script`, `without running the script: …`).
    pub decision: &'a str,
    /// Body bytes sent.
    pub bytes: u64,
    /// Seconds from the request's head to its outcome.
    pub duration_seconds: f64,
    /// False when the response was cut short after its head went out.
    pub complete: bool,
}

/// Writes an access line: `METHOD TARGET STATUS [DECISION] BYTES B MS ms`, or its JSON.
pub fn access(access: &Access<'_>) {
    match format() {
        Format::Text => {
            let ms = access.duration_seconds * 1000.0;
            let cut = if access.complete { "" } else { " (cut short)" };
            let text = format!(
                "{} {} {} [{}] {} B {ms:.1} ms{cut}\n",
                access.method, access.target, access.status, access.decision, access.bytes
            );
            write(text.as_bytes());
        }
        Format::Json => json(&Timed {
            time: now(),
            event: "access",
            fields: access,
        }),
    }
}

/// Writes one line of a script's stderr, already escaped by the relay
/// ([`crate::stderr_relay::escape_into`]): `{"event":"script_stderr","script":…,"line":…}`.
/// Text lines are written by the relay itself.
pub fn script_stderr(script: &str, line: &str) {
    json(&ScriptLine {
        time: now(),
        event: "script_stderr",
        script,
        line,
    });
}

#[derive(Serialize)]
struct Message<'a> {
    time: String,
    event: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Timed<'a, T: Serialize> {
    time: String,
    event: &'static str,
    #[serde(flatten)]
    fields: &'a T,
}

#[derive(Serialize)]
struct ScriptLine<'a> {
    time: String,
    event: &'static str,
    script: &'a str,
    line: &'a str,
}

fn json(value: &impl Serialize) {
    // Serializing these plain structs cannot fail; an empty line would be the only loss.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    write(&out);
}

/// The current time as RFC 3339 in UTC with milliseconds.
fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.replace_nanosecond(now.millisecond() as u32 * 1_000_000);
    millis
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One write per line, so lines from threads never interleave.
fn write(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_escapes_control_characters_and_is_one_line() {
        let text = serde_json::to_string(&Message {
            time: now(),
            event: "message",
            message: "a\nb\u{1b}[31m\u{7f}",
        })
        .unwrap();
        assert!(!text.contains('\n'), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["message"], "a\nb\u{1b}[31m\u{7f}");
        assert_eq!(parsed["event"], "message");
    }

    #[test]
    fn the_time_is_rfc_3339_utc() {
        let time = now();
        assert!(time.ends_with('Z'), "{time}");
        assert!(
            time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }

    #[test]
    fn an_access_line_flattens_its_fields() {
        let access = Access {
            method: "GET",
            target: "/a.cgi?x=1",
            status: 304,
            decision: "without running the script",
            bytes: 0,
            duration_seconds: 0.001,
            complete: true,
        };
        let text = serde_json::to_string(&Timed {
            time: now(),
            event: "access",
            fields: &access,
        })
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["status"], 304);
        assert_eq!(parsed["target"], "/a.cgi?x=1");
        assert_eq!(parsed["event"], "access");
    }
}
