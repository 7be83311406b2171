//! `explain` run as a user would, text and `--json`, for each decision kind.

mod common;

use std::process::Command;

use common::{TempDir, bin, set_mtime};
use serde_json::Value;

/// Last-Modified of `page.cgi`: its sidecar's time, newer than its other sources.
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
const BEFORE: &str = "Mon, 13 Nov 2023 00:00:00 GMT";

/// Scripts that leave `body-ran` behind if their body ever runs.
fn fixtures() -> TempDir {
    let dir = TempDir::new("explain");
    let body = "#!/bin/sh\nif [ \"$CONDITIONAL_PROBE\" = 1 ]; then echo 1750000000; exit 0; fi\n\
                touch body-ran\nprintf 'Content-Type: text/plain\\n\\nbody\\n'\n";
    for name in [
        "page.cgi",
        "probe.cgi",
        "future.cgi",
        "plain.cgi",
        "bad.cgi",
    ] {
        let script = dir.write(name, body, true);
        set_mtime(&script, 1_000_000_000);
    }
    let data = dir.write("data.txt", "x", false);
    set_mtime(&data, 1_600_000_000);
    dir.sidecar(
        "page.cgi",
        r#"{"last_modified": 1700000000, "depends_on": ["data.txt", "missing.txt"],
            "cache_seconds": 60, "cache_privacy": "public", "compress": true}"#,
    );
    dir.sidecar("probe.cgi", r#"{"probe": true}"#);
    dir.sidecar("future.cgi", r#"{"last_modified": 4102444800}"#);
    dir.sidecar("bad.cgi", r#"{"cache_second": 5}"#);
    dir
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn explain(dir: &TempDir, script: &str, args: &[&str]) -> Run {
    let out = Command::new(bin())
        .arg("explain")
        .arg(dir.join(script))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .expect("run explain");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs explain twice, as text and as JSON, and checks both succeeded.
fn both(dir: &TempDir, script: &str, args: &[&str]) -> (String, Value) {
    let text = explain(dir, script, args);
    assert!(text.ok, "explain failed: {}", text.stderr);
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let json = explain(dir, script, &with_json);
    assert!(json.ok, "explain --json failed: {}", json.stderr);
    let value = serde_json::from_str(&json.stdout).expect("one JSON object");
    assert!(
        !dir.join("body-ran").exists(),
        "explain ran the script's body"
    );
    (text.stdout, value)
}

fn condition<'a>(report: &'a Value, header: &str) -> &'a Value {
    report["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["header"] == header)
        .unwrap_or_else(|| panic!("no {header} in {report}"))
}

fn page_etag(dir: &TempDir) -> String {
    let (_, report) = both(dir, "page.cgi", &[]);
    report["etag"].as_str().unwrap().to_string()
}

#[test]
fn if_none_match_matched_is_304_by_step_3() {
    let dir = fixtures();
    let etag = page_etag(&dir);
    let header = format!("If-None-Match: {etag}");
    let (text, json) = both(&dir, "page.cgi", &["--header", &header]);
    assert!(
        text.contains("304 Not Modified, without running the script"),
        "{text}"
    );
    assert!(text.contains("RFC 9110 §13.2.2 step 3: If-None-Match matched on GET/HEAD"));
    assert_eq!(json["decision"]["status"], 304);
    assert_eq!(json["decision"]["rule_id"], "IfNoneMatchMatched");
    assert_eq!(json["decision"]["runs_script"], false);
    assert_eq!(condition(&json, "If-None-Match")["state"], "parsed");

    // The gzip variant's tag, as a front end may send it back, matches too.
    let gzip = json["etag_variants"][0][1].as_str().unwrap().to_string();
    assert!(gzip.ends_with("-gzip\""), "{gzip}");
    let header = format!("If-None-Match: {gzip}");
    let (_, json) = both(&dir, "page.cgi", &["-H", &header]);
    assert_eq!(json["decision"]["status"], 304);
}

#[test]
fn not_modified_since_is_304_by_step_4() {
    let dir = fixtures();
    let header = format!("If-Modified-Since: {LAST_MODIFIED}");
    let (text, json) = both(&dir, "page.cgi", &["-H", &header]);
    assert!(text.contains("304 Not Modified"), "{text}");
    assert!(text.contains("step 4: not modified since If-Modified-Since"));
    assert_eq!(json["decision"]["rule_id"], "IfModifiedSinceNotModified");
    assert_eq!(json["decision"]["status"], 304);
}

#[test]
fn if_match_without_a_match_is_412_by_step_1() {
    let dir = fixtures();
    let (text, json) = both(
        &dir,
        "page.cgi",
        &["--method", "PUT", "-H", "If-Match: \"other\""],
    );
    assert!(text.contains("412 Precondition Failed"), "{text}");
    assert!(text.contains("step 1: If-Match has no strong match"));
    assert_eq!(json["decision"]["status"], 412);
    assert_eq!(json["decision"]["rule_id"], "IfMatchFailed");
    assert_eq!(json["request"]["method"], "PUT");
}

#[test]
fn modified_after_if_unmodified_since_is_412_by_step_2() {
    let dir = fixtures();
    let header = format!("If-Unmodified-Since: {BEFORE}");
    let (text, json) = both(&dir, "page.cgi", &["--method", "post", "-H", &header]);
    assert!(
        text.contains("step 2: modified after If-Unmodified-Since"),
        "{text}"
    );
    assert_eq!(json["decision"]["status"], 412);
    assert_eq!(json["decision"]["rule_id"], "IfUnmodifiedSinceFailed");
}

#[test]
fn no_condition_proceeds_and_shows_every_source_and_header() {
    let dir = fixtures();
    let (text, json) = both(&dir, "page.cgi", &["--query", "a=1"]);
    assert!(
        text.contains("the script runs and its response is sent"),
        "{text}"
    );
    assert!(text.contains("step 5: no condition applies"));
    assert_eq!(json["decision"]["decision"], "proceed");
    assert_eq!(json["decision"]["status"], Value::Null);
    assert_eq!(json["decision"]["runs_script"], true);
    assert_eq!(json["declared"], true);
    assert!(
        json["sidecar"]
            .as_str()
            .unwrap()
            .ends_with("page.cgi.conditional.json")
    );
    assert_eq!(json["last_modified"]["http_date"], LAST_MODIFIED);
    assert_eq!(json["request"]["query"], "a=1");

    let sources = json["last_modified_sources"].as_array().unwrap();
    let kinds: Vec<&str> = sources
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["sidecar", "dependency", "dependency", "script_file"]
    );
    assert_eq!(sources[0]["time"]["unix"], 1_700_000_000);
    assert_eq!(sources[0]["newest"], true);
    assert_eq!(sources[1]["time"]["unix"], 1_600_000_000);
    assert!(
        sources[2]["path"]
            .as_str()
            .unwrap()
            .ends_with("missing.txt")
    );
    assert_eq!(sources[2]["time"], Value::Null);
    assert_eq!(sources[3]["time"]["unix"], 1_000_000_000);
    assert!(text.contains("depends_on data.txt"));
    assert!(text.contains("depends_on missing.txt"));
    assert!(text.contains("missing"));
    assert!(text.contains("script file mtime"));
    assert!(text.contains("← newest"));

    let header = |name: &str| {
        json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(
        header("Cache-Control").as_deref(),
        Some("public, max-age=60")
    );
    assert_eq!(header("Vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(header("ETag"), json["etag"].as_str().map(str::to_string));
    assert!(text.contains("Cache-Control: public, max-age=60"));
    assert_eq!(json["etag_variants"].as_array().unwrap().len(), 2);

    // A client that accepts gzip gets the gzip coding and the gzip variant's ETag; the
    // headers shared by the 200 and the 304 carry no Content-Encoding (a 304 has no body).
    let (_, gz) = both(&dir, "page.cgi", &["-H", "Accept-Encoding: gzip"]);
    assert_eq!(gz["coding"], "gzip");
    let shared = gz["headers"].as_array().unwrap();
    assert!(
        shared
            .iter()
            .any(|h| h[0] == "ETag" && h[1].as_str().unwrap().ends_with("-gzip\""))
    );
    assert!(!shared.iter().any(|h| h[0] == "Content-Encoding"));
}

#[test]
fn modified_since_proceeds_by_step_4() {
    let dir = fixtures();
    let header = format!("If-Modified-Since: {BEFORE}");
    let (text, json) = both(&dir, "page.cgi", &["-H", &header]);
    assert!(
        text.contains("step 4: modified since If-Modified-Since"),
        "{text}"
    );
    assert_eq!(json["decision"]["rule_id"], "IfModifiedSinceModified");
}

#[test]
fn a_future_date_is_ignored() {
    let dir = fixtures();
    let (text, json) = both(
        &dir,
        "page.cgi",
        &["-H", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"],
    );
    let ims = condition(&json, "If-Modified-Since");
    assert_eq!(ims["state"], "ignored");
    assert_eq!(ims["note"], "date is in the future");
    assert!(text.contains("ignored: date is in the future"), "{text}");
    assert_eq!(json["decision"]["rule_id"], "NoConditionApplies");

    let (text, json) = both(&dir, "page.cgi", &["-H", "If-Modified-Since: yesterday"]);
    assert_eq!(
        condition(&json, "If-Modified-Since")["note"],
        "not a valid HTTP-date"
    );
    assert!(text.contains("ignored: not a valid HTTP-date"), "{text}");
}

#[test]
fn a_malformed_list_is_ignored() {
    let dir = fixtures();
    let (text, json) = both(&dir, "page.cgi", &["-H", "If-None-Match: not-quoted"]);
    let inm = condition(&json, "If-None-Match");
    assert_eq!(inm["state"], "ignored");
    assert_eq!(inm["raw"], "not-quoted");
    assert_eq!(inm["note"], "malformed entity-tag list");
    assert!(
        text.contains("ignored: malformed entity-tag list"),
        "{text}"
    );
    assert_eq!(json["decision"]["decision"], "proceed");

    // If-Match is the exception: unusable, it matches nothing.
    let (_, json) = both(&dir, "page.cgi", &["-H", "If-Match: not-quoted"]);
    assert_eq!(json["decision"]["status"], 412);
    assert!(
        condition(&json, "If-Match")["note"]
            .as_str()
            .unwrap()
            .contains("matches nothing")
    );
}

#[test]
fn conditions_not_applicable_are_marked() {
    let dir = fixtures();
    let header = format!("If-Modified-Since: {LAST_MODIFIED}");
    let (text, json) = both(&dir, "page.cgi", &["--method", "POST", "-H", &header]);
    let ims = condition(&json, "If-Modified-Since");
    assert_eq!(ims["state"], "not_evaluated");
    assert!(
        ims["note"]
            .as_str()
            .unwrap()
            .contains("only to GET and HEAD")
    );
    assert!(text.contains("not evaluated: step 4 applies only to GET and HEAD, not POST"));
    assert_eq!(json["decision"]["rule_id"], "NoConditionApplies");

    let (_, json) = both(
        &dir,
        "page.cgi",
        &["-H", "If-None-Match: \"x\"", "-H", &header],
    );
    assert_eq!(
        condition(&json, "If-Modified-Since")["state"],
        "not_evaluated"
    );
    assert_eq!(json["decision"]["rule_id"], "IfNoneMatchNoMatch");
}

#[test]
fn a_pass_through_script_runs_on_every_request() {
    let dir = fixtures();
    let (text, json) = both(&dir, "plain.cgi", &["-H", "If-None-Match: \"x\""]);
    assert!(text.contains("pass-through"), "{text}");
    assert!(text.contains("the script runs on every request"));
    assert_eq!(json["declared"], false);
    assert_eq!(json["sidecar"], Value::Null);
    assert_eq!(json["etag"], Value::Null);
    assert_eq!(json["decision"]["decision"], "pass_through");
    assert_eq!(json["decision"]["status"], Value::Null);
    assert_eq!(json["decision"]["runs_script"], true);
    assert_eq!(condition(&json, "If-None-Match")["state"], "parsed");
}

#[test]
fn the_probe_runs_but_not_the_body() {
    let dir = fixtures();
    let (text, json) = both(&dir, "probe.cgi", &[]);
    let sources = json["last_modified_sources"].as_array().unwrap();
    assert_eq!(sources[0]["source"], "probe");
    assert_eq!(sources[0]["time"]["unix"], 1_750_000_000);
    assert_eq!(json["last_modified"]["unix"], 1_750_000_000);
    assert!(text.contains("probe answer"), "{text}");
}

#[test]
fn a_future_source_is_clamped_to_now() {
    let dir = fixtures();
    let (text, json) = both(&dir, "future.cgi", &[]);
    assert_eq!(json["clamped_to_now"], true);
    assert_eq!(json["last_modified"]["unix"], json["now"]["unix"]);
    assert!(text.contains("clamp to now"));
    assert!(
        text.contains("yes: the newest source is in the future"),
        "{text}"
    );
}

#[test]
fn a_bad_sidecar_is_an_error_naming_it() {
    let dir = fixtures();
    let run = explain(&dir, "bad.cgi", &[]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("bad.cgi.conditional.json") && run.stderr.contains("cache_second"),
        "{}",
        run.stderr
    );
    let run = explain(&dir, "bad.cgi", &["--json"]);
    assert!(!run.ok);
    let value: Value = serde_json::from_str(&run.stdout).expect("JSON error object");
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("bad.cgi.conditional.json")
    );
    let missing = explain(&dir, "nowhere.cgi", &[]);
    assert!(!missing.ok);
    assert!(
        missing.stderr.contains("script not found"),
        "{}",
        missing.stderr
    );
}

fn range_of(json: &Value) -> &Value {
    &json["range"]
}

#[test]
fn a_range_with_a_matching_if_range_would_be_served_from_a_long_enough_body() {
    let dir = fixtures();
    let etag = page_etag(&dir);
    let if_range = format!("If-Range: {etag}");
    let (text, json) = both(
        &dir,
        "page.cgi",
        &["-H", "Range: bytes=0-9", "-H", &if_range],
    );
    assert!(
        text.contains(
            "If-Range matches; 206 with range 0-9 would be served if the body is at least 10 bytes"
        ),
        "{text}"
    );
    let range = range_of(&json);
    assert_eq!(range["state"], "parsed");
    assert_eq!(range["decision"], "ranges");
    assert_eq!(range["status"], Value::Null);
    assert_eq!(range["if_range"]["holds"], true);
    assert_eq!(range["ranges"][0]["spec"], "0-9");
    // The script runs: a Range never answers without it.
    assert_eq!(json["decision"]["runs_script"], true);
}

#[test]
fn if_range_compares_with_the_variant_sent_and_ranges_count_its_bytes() {
    let dir = fixtures();
    let etag = page_etag(&dir);
    let gzip = ["-H", "Accept-Encoding: gzip", "-H", "Range: bytes=100-"];
    // The identity tag names other bytes than the gzip body this client gets.
    let identity = format!("If-Range: {etag}");
    let (text, json) = both(&dir, "page.cgi", &[&gzip[..], &["-H", &identity]].concat());
    assert_eq!(range_of(&json)["if_range"]["holds"], false);
    assert_eq!(range_of(&json)["status"], 200);
    assert!(
        text.contains("does not match: not the current ETag"),
        "{text}"
    );
    // Last-Modified, long past, is a strong validator and matches the same in every coding.
    let date = format!("If-Range: {LAST_MODIFIED}");
    let (text, json) = both(&dir, "page.cgi", &[&gzip[..], &["-H", &date]].concat());
    assert_eq!(range_of(&json)["if_range"]["holds"], true);
    assert!(
        text.contains("counted in the bytes of the gzip-encoded body"),
        "{text}"
    );
    // A weak tag never matches.
    let (_, json) = both(
        &dir,
        "page.cgi",
        &["-H", "Range: bytes=0-0", "-H", "If-Range: W/\"x\""],
    );
    assert_eq!(
        range_of(&json)["if_range"]["note"],
        "a weak entity-tag never matches"
    );
}

#[test]
fn a_range_set_that_does_not_parse_is_416_and_another_unit_is_ignored() {
    let dir = fixtures();
    let (text, json) = both(&dir, "page.cgi", &["-H", "Range: bytes=9-1"]);
    assert_eq!(range_of(&json)["status"], 416);
    assert_eq!(range_of(&json)["state"], "malformed");
    assert!(
        text.contains("416 Range Not Satisfiable with Content-Range: bytes */LENGTH"),
        "{text}"
    );

    let (text, json) = both(&dir, "page.cgi", &["-H", "Range: items=0-9"]);
    assert_eq!(range_of(&json)["state"], "ignored");
    assert_eq!(range_of(&json)["status"], 200);
    assert!(
        text.contains("ignored: the range unit is not bytes"),
        "{text}"
    );

    let (_, json) = both(
        &dir,
        "page.cgi",
        &["--method", "HEAD", "-H", "Range: bytes=0-0"],
    );
    assert_eq!(range_of(&json)["decision"], "whole");
    assert!(
        range_of(&json)["summary"]
            .as_str()
            .unwrap()
            .contains("HEAD ignores Range")
    );
}

#[test]
fn each_range_says_what_it_serves_and_overlapping_ones_get_the_whole_200() {
    let dir = fixtures();
    let (text, json) = both(&dir, "page.cgi", &["-H", "Range: bytes=0-99, 50-, -0"]);
    let ranges = range_of(&json)["ranges"].as_array().unwrap();
    let specs: Vec<&str> = ranges.iter().map(|r| r["spec"].as_str().unwrap()).collect();
    assert_eq!(specs, ["0-99", "50-", "-0"]);
    assert!(text.contains("from byte 50 to the end"), "{text}");
    assert!(
        text.contains("a suffix of length 0 is never satisfiable"),
        "{text}"
    );
    assert!(
        text.contains("the whole 200 if the body is at least 100 bytes: the ranges overlap"),
        "{text}"
    );

    let (text, _) = both(&dir, "page.cgi", &["-H", "Range: bytes=0-9,20-29"]);
    assert!(
        text.contains("206 multipart/byteranges with ranges 0-9, 20-29 would be served if the body is at least 30 bytes"),
        "{text}"
    );
}

#[test]
fn range_is_shown_only_when_sent_and_not_applied_to_pass_through_scripts() {
    let dir = fixtures();
    let (text, json) = both(&dir, "page.cgi", &[]);
    assert_eq!(json["range"], Value::Null);
    assert!(!text.contains("Range (RFC"), "{text}");

    let (_, json) = both(&dir, "plain.cgi", &["-H", "Range: bytes=0-9"]);
    assert_eq!(range_of(&json)["decision"], "not_applied");

    // A 304 comes first.
    let etag = page_etag(&dir);
    let inm = format!("If-None-Match: {etag}");
    let (_, json) = both(&dir, "page.cgi", &["-H", "Range: bytes=0-9", "-H", &inm]);
    assert_eq!(range_of(&json)["decision"], "not_reached");

    // If-Range alone is ignored (RFC 9110 §13.1.5).
    let (_, json) = both(&dir, "page.cgi", &["-H", "If-Range: \"x\""]);
    assert!(
        range_of(&json)["if_range"]["note"]
            .as_str()
            .unwrap()
            .contains("ignored without Range")
    );
}
