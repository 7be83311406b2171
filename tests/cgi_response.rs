//! The 200 path through the built binary: the script's response passed on with the wrapper's
//! validators, cache policy, coding and Content-Length; HEAD; streaming; pass-through scripts.

mod common;

use common::{Cgi, TempDir, set_mtime};
use std::io::Read;
use std::path::PathBuf;

const T0: u64 = 1_700_000_000;

fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.write(name, format!("#!/bin/sh\n{body}"), true);
    set_mtime(&path, T0);
    path
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn script_status_and_repeated_headers_are_kept_and_owned_headers_replaced() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "a.cgi",
        "printf 'Status: 200 Fine\\nSet-Cookie: a=1\\nETag: \"mine\"\\nCache-Control: no-cache\\nLast-Modified: Mon, 01 Jan 2001 00:00:00 GMT\\nSet-Cookie: b=2\\nContent-Type: text/plain\\n\\nbody'",
    );
    dir.sidecar("a.cgi", r#"{"cache_seconds": 30}"#);
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers_named("Set-Cookie"), vec!["a=1", "b=2"]);
    assert_eq!(r.headers_named("ETag").len(), 1);
    assert_ne!(r.header("ETag"), Some("\"mine\""));
    assert_eq!(
        r.headers_named("Cache-Control"),
        vec!["private, max-age=30"]
    );
    assert_eq!(
        r.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    assert_eq!(r.header("Content-Length"), Some("4"));
    assert_eq!(r.body, b"body");
}

#[test]
fn non_200_status_from_a_declared_script_passes_through_without_validators() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "a.cgi",
        "printf 'Status: 404 Nope\\nContent-Type: text/plain\\n\\ngone'",
    );
    dir.sidecar("a.cgi", "{}");
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("ETag"), None);
    assert_eq!(r.text(), "gone");
}

#[test]
fn cache_policies() {
    let dir = TempDir::new("resp");
    let s = script(&dir, "a.cgi", "printf 'Content-Type: text/plain\\n\\nx'");
    let cases = [
        (r#"{"cache_seconds": -1}"#, "no-store", Some("no-cache")),
        (
            r#"{"cache_seconds": 0, "cache_privacy": "public"}"#,
            "private, max-age=0, must-revalidate",
            None,
        ),
        (r#"{"cache_seconds": 90}"#, "private, max-age=90", None),
        (
            r#"{"cache_seconds": 90, "cache_privacy": "public"}"#,
            "public, max-age=90",
            None,
        ),
    ];
    for (sidecar, cache_control, pragma) in cases {
        dir.sidecar("a.cgi", sidecar);
        let r = Cgi::new(&s).run();
        assert_eq!(r.header("Cache-Control"), Some(cache_control), "{sidecar}");
        assert_eq!(r.header("Pragma"), pragma, "{sidecar}");
        let expires = httpdate::parse_http_date(r.header("Expires").unwrap()).unwrap();
        let now = std::time::SystemTime::now();
        if cache_control.contains("90") {
            let ahead = expires.duration_since(now).unwrap().as_secs();
            assert!((85..=91).contains(&ahead), "{ahead}");
        } else {
            assert!(expires <= now + std::time::Duration::from_secs(1));
        }
    }
}

#[test]
fn gzip_and_deflate_by_q_value_with_distinct_etags_and_content_length() {
    let dir = TempDir::new("resp");
    let text = "compress me please ".repeat(200);
    let s = script(
        &dir,
        "a.cgi",
        &format!("printf 'Content-Type: text/html\\n\\n'\nprintf '%s' '{text}'"),
    );
    dir.sidecar("a.cgi", r#"{"compress": true}"#);
    let plain = Cgi::new(&s).run();
    assert_eq!(plain.header("Content-Encoding"), None);
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(plain.text(), text);

    let gz = Cgi::new(&s)
        .header("ACCEPT_ENCODING", "gzip, deflate")
        .run();
    assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
    assert_eq!(gz.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(
        gz.header("Content-Length"),
        Some(gz.body.len().to_string().as_str())
    );
    assert!(gz.body.len() < text.len() / 4);
    assert_eq!(gunzip(&gz.body), text.as_bytes());
    assert_ne!(gz.header("ETag"), plain.header("ETag"));

    let z = Cgi::new(&s)
        .header("ACCEPT_ENCODING", "gzip;q=0.4, deflate;q=0.9")
        .run();
    assert_eq!(z.header("Content-Encoding"), Some("deflate"));
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&z.body[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, text.as_bytes());

    let refused = Cgi::new(&s).header("ACCEPT_ENCODING", "gzip;q=0").run();
    assert_eq!(refused.header("Content-Encoding"), None);

    // Either variant's tag revalidates; the 304 names the variant this client would get.
    for tag in [plain.header("ETag").unwrap(), gz.header("ETag").unwrap()] {
        let r = Cgi::new(&s)
            .header("ACCEPT_ENCODING", "gzip")
            .header("IF_NONE_MATCH", tag)
            .run();
        assert_eq!(r.status, 304, "{tag}");
        assert_eq!(r.header("ETag"), gz.header("ETag"));
        assert_eq!(
            r.header("Content-Encoding"),
            None,
            "a 304 has no body to encode"
        );
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
    }
}

#[test]
fn head_gets_the_headers_of_a_get_and_no_body() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "a.cgi",
        "printf 'Content-Type: text/plain\\nX-Method: %s\\n\\nsome body' \"$REQUEST_METHOD\"",
    );
    dir.sidecar("a.cgi", r#"{"compress": true}"#);
    let get = Cgi::new(&s).header("ACCEPT_ENCODING", "gzip").run();
    let head = Cgi::new(&s)
        .method("HEAD")
        .header("ACCEPT_ENCODING", "gzip")
        .run();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in [
        "ETag",
        "Last-Modified",
        "Content-Length",
        "Content-Encoding",
        "Content-Type",
        "X-Method",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
}

#[test]
fn large_bodies_stream_without_content_length_byte_exact() {
    let dir = TempDir::new("resp");
    // 3 MiB of a verifiable pattern: block i of 1 KiB is all one letter.
    let pattern: Vec<u8> = (0..3072)
        .flat_map(|i| vec![65 + (i % 26) as u8; 1024])
        .collect();
    let data = dir.write("pattern.bin", &pattern, false);
    let s = script(
        &dir,
        "big.cgi",
        &format!(
            "printf 'Content-Type: application/octet-stream\\n\\n'\ncat '{}'",
            data.display()
        ),
    );
    dir.sidecar("big.cgi", r#"{"compress": true}"#);
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), None);
    assert_eq!(r.body.len(), 3072 * 1024);
    for (i, block) in r.body.chunks(1024).enumerate() {
        assert!(block.iter().all(|&b| b == 65 + (i % 26) as u8), "block {i}");
    }
    let gz = Cgi::new(&s).header("ACCEPT_ENCODING", "gzip").run();
    assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
    assert_eq!(gz.header("Content-Length"), None);
    assert_eq!(gunzip(&gz.body), r.body);
}

#[test]
fn a_post_answers_with_the_validators_computed_after_the_script_ran() {
    let dir = TempDir::new("resp");
    let data = dir.write("data.txt", "v1", false);
    set_mtime(&data, T0);
    let s = script(
        &dir,
        "a.cgi",
        &format!(
            "if [ \"$REQUEST_METHOD\" = POST ]; then cat > '{0}'; touch -d @{1} '{0}'; fi\nprintf 'Content-Type: text/plain\\n\\n'; cat '{0}'",
            data.display(),
            T0 + 100
        ),
    );
    dir.sidecar("a.cgi", r#"{"depends_on": ["data.txt"]}"#);
    let before = Cgi::new(&s).run();
    assert_eq!(
        before.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    let post = Cgi::new(&s).method("POST").body("v2").run();
    assert_eq!(post.status, 200);
    assert_eq!(
        post.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:15:00 GMT")
    );
    assert_ne!(post.header("ETag"), before.header("ETag"));
    let after = Cgi::new(&s).run();
    assert_eq!(after.text(), "v2");
    assert_eq!(
        after.header("ETag"),
        post.header("ETag"),
        "the POST's validators are current"
    );
}

#[test]
fn pass_through_scripts_run_every_time_and_their_own_validators_give_304_after_the_run() {
    let dir = TempDir::new("resp");
    let runs = dir.join("runs.log");
    let s = script(
        &dir,
        "own.cgi",
        &format!(
            "echo run >> '{}'\nprintf 'ETag: \"own-1\"\\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\\nContent-Type: text/plain\\n\\nown body'",
            runs.display()
        ),
    );
    let count = || std::fs::read_to_string(&runs).unwrap().lines().count();
    let r = Cgi::new(&s).run();
    assert_eq!((r.status, r.text().as_str()), (200, "own body"));
    assert_eq!(r.header("ETag"), Some("\"own-1\""));
    assert_eq!(
        r.header("Cache-Control"),
        None,
        "no policy added without a sidecar"
    );
    let r = Cgi::new(&s).header("IF_NONE_MATCH", "\"own-1\"").run();
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("ETag"), Some("\"own-1\""));
    assert_eq!(r.header("Content-Type"), None);
    let r = Cgi::new(&s)
        .header("IF_MODIFIED_SINCE", "Tue, 14 Nov 2023 22:13:20 GMT")
        .run();
    assert_eq!(r.status, 304);
    let r = Cgi::new(&s).header("IF_NONE_MATCH", "\"other\"").run();
    assert_eq!(r.status, 200);
    assert_eq!(count(), 4, "a pass-through script runs on every request");
}

#[test]
fn depends_on_files_and_folders_move_last_modified_and_etag() {
    let dir = TempDir::new("resp");
    let s = script(&dir, "a.cgi", "printf 'Content-Type: text/plain\\n\\nx'");
    let label = dir.write("label.txt", "a", false);
    set_mtime(&label, T0 - 10);
    let nested = dir.write("data/deep/item.txt", "a", false);
    set_mtime(&nested, T0 - 10);
    set_mtime(&dir.join("data/deep"), T0 - 10);
    set_mtime(&dir.join("data"), T0 - 10);
    dir.sidecar(
        "a.cgi",
        r#"{"depends_on": ["label.txt", "data/", "missing.txt"]}"#,
    );
    let first = Cgi::new(&s).run();
    assert_eq!(
        first.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    set_mtime(&label, T0 + 60);
    let second = Cgi::new(&s).run();
    assert_eq!(
        second.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:14:20 GMT")
    );
    assert_ne!(second.header("ETag"), first.header("ETag"));
    set_mtime(&nested, T0 + 120);
    let third = Cgi::new(&s).run();
    assert_eq!(
        third.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:15:20 GMT")
    );
    let r = Cgi::new(&s)
        .header("IF_NONE_MATCH", second.header("ETag").unwrap())
        .run();
    assert_eq!(r.status, 200, "an ETag from before the change is stale");
}

#[test]
fn last_modified_in_three_formats_and_clamped_to_now() {
    let dir = TempDir::new("resp");
    let s = script(&dir, "a.cgi", "printf 'Content-Type: text/plain\\n\\nx'");
    set_mtime(&s, 1_000_000_000);
    for value in [
        "1700000000",
        "\"Tue, 14 Nov 2023 22:13:20 GMT\"",
        "\"2023-11-14T23:13:20+01:00\"",
    ] {
        dir.sidecar("a.cgi", &format!(r#"{{"last_modified": {value}}}"#));
        let r = Cgi::new(&s).run();
        assert_eq!(
            r.header("Last-Modified"),
            Some("Tue, 14 Nov 2023 22:13:20 GMT"),
            "{value}"
        );
    }
    dir.sidecar("a.cgi", r#"{"last_modified": 4000000000}"#);
    let r = Cgi::new(&s).run();
    let lm = httpdate::parse_http_date(r.header("Last-Modified").unwrap()).unwrap();
    let now = std::time::SystemTime::now();
    assert!(
        lm <= now && now.duration_since(lm).unwrap().as_secs() < 5,
        "clamped to now"
    );
}

#[test]
fn probe_answer_sets_last_modified_and_is_never_sent() {
    let dir = TempDir::new("resp");
    let runs = dir.join("runs.log");
    let probing = |name: &str, answer: u64| {
        let s = script(
            &dir,
            name,
            &format!(
                "if [ \"$CONDITIONAL_PROBE\" = 1 ]; then echo {answer}; echo secret; exit 0; fi\necho run >> '{}'\nprintf 'Content-Type: text/plain\\n\\npage'",
                runs.display()
            ),
        );
        dir.sidecar(name, r#"{"probe": true}"#);
        s
    };
    // The probe says 2027-01-15, later than now: Last-Modified is clamped to now.
    let r = Cgi::new(&probing("future.cgi", 1_800_000_000)).run();
    let lm = httpdate::parse_http_date(r.header("Last-Modified").unwrap()).unwrap();
    let now = std::time::SystemTime::now();
    assert!(lm <= now && now.duration_since(lm).unwrap().as_secs() < 5);
    assert_eq!(r.text(), "page");
    assert!(!r.text().contains("secret"));
    // A past answer (newer than the script's mtime) is Last-Modified, and a 304 runs only the
    // probe.
    let s = probing("p.cgi", T0 + 500);
    let r = Cgi::new(&s).run();
    assert_eq!(
        r.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:21:40 GMT")
    );
    let r = Cgi::new(&s)
        .header("IF_NONE_MATCH", r.header("ETag").unwrap())
        .run();
    assert_eq!(r.status, 304);
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);
}

#[test]
fn probe_in_the_past_counts_when_newest() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "p.cgi",
        "if [ \"$CONDITIONAL_PROBE\" = 1 ]; then echo 'Wed, 15 Nov 2023 00:00:00 GMT'; exit 0; fi\nprintf 'Content-Type: text/plain\\n\\npage'",
    );
    dir.sidecar("p.cgi", r#"{"probe": true}"#);
    let r = Cgi::new(&s).run();
    assert_eq!(
        r.header("Last-Modified"),
        Some("Wed, 15 Nov 2023 00:00:00 GMT")
    );
}

#[test]
fn feed_mode_hands_the_client_date_forces_private_and_ignores_script_mtime() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "f.cgi",
        "printf 'Content-Type: text/plain\\n\\nsince=%s' \"$CONDITIONAL_CLIENT_DATE\"",
    );
    set_mtime(&s, T0 + 5000);
    dir.sidecar(
        "f.cgi",
        r#"{"feed": true, "last_modified": 1700000000, "cache_seconds": 60, "cache_privacy": "public"}"#,
    );
    let r = Cgi::new(&s).run();
    assert_eq!(r.text(), "since=0");
    assert_eq!(
        r.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    assert_eq!(r.header("Cache-Control"), Some("private, max-age=60"));
    let r = Cgi::new(&s)
        .header("IF_MODIFIED_SINCE", "Tue, 14 Nov 2023 22:00:00 GMT")
        .run();
    assert_eq!(r.text(), format!("since={}", T0 - 800));
    let r = Cgi::new(&s)
        .header("IF_MODIFIED_SINCE", "Tue, 14 Nov 2023 22:13:20 GMT")
        .run();
    assert_eq!(r.status, 304);
}

#[test]
fn session_cookie_and_file_are_covered_by_the_etag() {
    let dir = TempDir::new("resp");
    let sessions = dir.join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let s = script(&dir, "s.cgi", "printf 'Content-Type: text/plain\\n\\nhi'");
    dir.sidecar(
        "s.cgi",
        &format!(
            r#"{{"session": {{"cookie": "PHPSESSID", "save_path": "{}"}}, "cache_seconds": 60, "cache_privacy": "public"}}"#,
            sessions.display()
        ),
    );
    let anonymous = Cgi::new(&s).run();
    assert_eq!(
        anonymous.header("Cache-Control"),
        Some("public, max-age=60")
    );
    // Vary: Cookie with or without the cookie: a shared cache must not hand this copy to a
    // visitor who has a session.
    assert_eq!(anonymous.header("Vary"), Some("Cookie"));
    std::fs::write(sessions.join("sess_abc123"), "visits|i:1;").unwrap();
    let one = Cgi::new(&s)
        .header("COOKIE", "theme=dark; PHPSESSID=abc123")
        .run();
    assert_eq!(one.header("Cache-Control"), Some("private, max-age=60"));
    assert_eq!(one.header("Vary"), Some("Cookie"));
    assert_ne!(one.header("ETag"), anonymous.header("ETag"));
    let same = Cgi::new(&s)
        .header("COOKIE", "PHPSESSID=abc123")
        .header("IF_NONE_MATCH", one.header("ETag").unwrap())
        .run();
    assert_eq!(same.status, 304);
    assert_eq!(same.header("Vary"), Some("Cookie"));
    std::fs::write(sessions.join("sess_abc123"), "visits|i:2;").unwrap();
    let changed = Cgi::new(&s)
        .header("COOKIE", "PHPSESSID=abc123")
        .header("IF_NONE_MATCH", one.header("ETag").unwrap())
        .run();
    assert_eq!(changed.status, 200, "a changed session gives a new ETag");
    let other = Cgi::new(&s).header("COOKIE", "PHPSESSID=zzz999").run();
    assert_ne!(other.header("ETag"), changed.header("ETag"));
}

#[test]
fn a_scripts_own_204_and_304_get_no_content_length_and_no_body() {
    let dir = TempDir::new("resp");
    for (name, status) in [("nc.cgi", "204 No Content"), ("nm.cgi", "304 Not Modified")] {
        let s = script(
            &dir,
            name,
            &format!("printf 'Status: {status}\\n\\nstray body'"),
        );
        let r = Cgi::new(&s).run();
        assert_eq!(r.status.to_string(), status[..3]);
        assert_eq!(r.header("Content-Length"), None, "{status}");
        assert!(r.body.is_empty(), "{status}");
    }
}

#[test]
fn cgi_mode_leaves_a_local_redirect_to_the_server() {
    let dir = TempDir::new("resp");
    let s = script(&dir, "moved.cgi", "printf 'Location: /elsewhere\\n\\n'");
    let r = Cgi::new(&s).run();
    // Apache redirects internally when a 200 carries a local Location (RFC 3875 §6.2.2).
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Location"), Some("/elsewhere"));
    let s = script(
        &dir,
        "away.cgi",
        "printf 'Location: http://example.org/\\n\\n'",
    );
    assert_eq!(Cgi::new(&s).run().status, 302, "a client redirect");
}

#[test]
fn a_pass_through_304_keeps_the_scripts_set_cookie() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "own.cgi",
        "printf 'ETag: \"v1\"\\nSet-Cookie: sid=abc; Path=/\\nContent-Type: text/plain\\n\\nbody'",
    );
    let r = Cgi::new(&s).header("IF_NONE_MATCH", "\"v1\"").run();
    assert_eq!(r.status, 304);
    assert_eq!(r.header("Set-Cookie"), Some("sid=abc; Path=/"));
    assert!(r.body.is_empty());
}

#[test]
fn if_match_on_pass_through_output_without_an_etag_is_412() {
    let dir = TempDir::new("resp");
    let s = script(
        &dir,
        "plain.cgi",
        "printf 'Content-Type: text/plain\\n\\nbody'",
    );
    let r = Cgi::new(&s).header("IF_MATCH", "\"v1\"").run();
    assert_eq!(r.status, 412, "RFC 9110 §13.1.1: no current ETag matches");
    let r = Cgi::new(&s).header("IF_MATCH", "*").run();
    assert_eq!(r.status, 200, "`*` matches any current representation");
    assert_eq!(r.body, b"body");
}
