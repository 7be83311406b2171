//! RFC 9110 §13.2.2 decisions through the built binary in CGI mode: 304 and 412 answered
//! without running a declared script, with the headers the contract requires.

mod common;

use common::{Cgi, TempDir, set_mtime};
use std::path::PathBuf;

/// Script mtime used throughout: Tue, 14 Nov 2023 22:13:20 GMT.
const T0: u64 = 1_700_000_000;
const T0_DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

struct Page {
    _dir: TempDir,
    script: PathBuf,
    runs: PathBuf,
}

impl Page {
    fn new(sidecar: &str) -> Self {
        let dir = TempDir::new("cond");
        let runs = dir.join("runs.log");
        let script = dir.write(
            "page.cgi",
            format!(
                "#!/bin/sh\necho run >> '{}'\nprintf 'Content-Type: text/plain\\n\\n'\nprintf 'hello %s\\n' \"$QUERY_STRING\"\n",
                runs.display()
            ),
            true,
        );
        dir.sidecar("page.cgi", sidecar);
        set_mtime(&script, T0);
        Page {
            _dir: dir,
            script,
            runs,
        }
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(&self.runs)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn get(&self) -> Cgi {
        Cgi::new(&self.script)
    }

    fn etag(&self) -> String {
        let r = self.get().run();
        assert_eq!(r.status, 200);
        r.header("ETag").expect("ETag").to_string()
    }
}

#[test]
fn first_request_runs_the_script_with_validators() {
    let page = Page::new("{}");
    let r = page.get().run();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello \n");
    assert_eq!(r.header("Last-Modified"), Some(T0_DATE));
    let etag = r.header("ETag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
        "{etag}"
    );
    assert_eq!(page.runs(), 1);
}

#[test]
fn if_none_match_match_is_304_without_running_the_script() {
    let page = Page::new(r#"{"cache_seconds": 60, "cache_privacy": "public"}"#);
    let etag = page.etag();
    let r = page.get().header("IF_NONE_MATCH", &etag).run();
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(page.runs(), 1, "the script ran for a 304");
    assert_eq!(r.header("ETag"), Some(etag.as_str()));
    assert_eq!(r.header("Last-Modified"), Some(T0_DATE));
    assert_eq!(r.header("Cache-Control"), Some("public, max-age=60"));
    assert!(r.header("Expires").is_some());
    assert_eq!(r.header("Content-Type"), None);
    assert_eq!(r.header("Content-Length"), None);
}

#[test]
fn if_none_match_on_head_is_304() {
    let page = Page::new("{}");
    let etag = page.etag();
    let r = page
        .get()
        .method("HEAD")
        .header("IF_NONE_MATCH", &etag)
        .run();
    assert_eq!(r.status, 304);
    assert_eq!(page.runs(), 1);
}

#[test]
fn if_none_match_in_a_list_and_weak_and_front_end_suffixes_are_304() {
    let page = Page::new("{}");
    let etag = page.etag();
    let bare = etag.trim_matches('"');
    for sent in [
        format!("\"other\", {etag}"),
        format!("W/{etag}"),
        format!("\"{bare}-gzip\""),
        format!("\"{bare}-br\""),
        format!("W/\"{bare}-gzip\""),
    ] {
        let r = page.get().header("IF_NONE_MATCH", &sent).run();
        assert_eq!(r.status, 304, "If-None-Match: {sent}");
    }
    assert_eq!(page.runs(), 1);
}

#[test]
fn if_none_match_star_is_304_on_get_and_412_on_post() {
    let page = Page::new("{}");
    let r = page.get().header("IF_NONE_MATCH", "*").run();
    assert_eq!(r.status, 304);
    let r = page
        .get()
        .method("POST")
        .header("IF_NONE_MATCH", "*")
        .body("a=1")
        .run();
    assert_eq!(r.status, 412);
    assert!(r.body_consumed, "the request body must be read");
    assert_eq!(page.runs(), 0);
}

#[test]
fn if_none_match_mismatch_runs_the_script() {
    let page = Page::new("{}");
    let r = page.get().header("IF_NONE_MATCH", "\"stale\"").run();
    assert_eq!(r.status, 200);
    assert_eq!(page.runs(), 1);
}

#[test]
fn if_match_mismatch_is_412_without_running_and_match_proceeds() {
    let page = Page::new("{}");
    let etag = page.etag();
    let r = page
        .get()
        .method("PUT")
        .header("IF_MATCH", "\"someone-else\"")
        .body(vec![b'x'; 300_000])
        .run();
    assert_eq!(r.status, 412);
    assert!(
        r.body_consumed,
        "a 412 must still read the whole body (mod_cgid)"
    );
    assert_eq!(page.runs(), 1);
    let r = page
        .get()
        .method("POST")
        .header("IF_MATCH", &etag)
        .body("x")
        .run();
    assert_eq!(r.status, 200);
    let r = page
        .get()
        .method("POST")
        .header("IF_MATCH", format!("W/{etag}"))
        .run();
    assert_eq!(r.status, 412, "a weak tag never matches If-Match");
    assert_eq!(page.runs(), 2);
}

#[test]
fn if_unmodified_since_before_last_change_is_412() {
    let page = Page::new("{}");
    let r = page
        .get()
        .method("POST")
        .header("IF_UNMODIFIED_SINCE", "Tue, 14 Nov 2023 22:13:19 GMT")
        .run();
    assert_eq!(r.status, 412);
    let r = page
        .get()
        .method("POST")
        .header("IF_UNMODIFIED_SINCE", T0_DATE)
        .run();
    assert_eq!(r.status, 200);
    assert_eq!(page.runs(), 1);
}

#[test]
fn if_modified_since_in_all_three_formats_and_with_length_is_304() {
    let page = Page::new("{}");
    for date in [
        T0_DATE.to_string(),
        "Tuesday, 14-Nov-23 22:13:20 GMT".to_string(),
        "Tue Nov 14 22:13:20 2023".to_string(),
        format!("{T0_DATE}; length=1234"),
        "Wed, 15 Nov 2023 00:00:00 GMT".to_string(),
    ] {
        let r = page.get().header("IF_MODIFIED_SINCE", &date).run();
        assert_eq!(r.status, 304, "If-Modified-Since: {date}");
    }
    assert_eq!(page.runs(), 0);
}

#[test]
fn if_modified_since_older_invalid_or_future_runs_the_script() {
    let page = Page::new("{}");
    for date in [
        "Tue, 14 Nov 2023 22:13:19 GMT",
        "not a date",
        "Fri, 01 Jan 2100 00:00:00 GMT",
    ] {
        let r = page.get().header("IF_MODIFIED_SINCE", date).run();
        assert_eq!(r.status, 200, "If-Modified-Since: {date}");
    }
    assert_eq!(page.runs(), 3);
}

#[test]
fn if_modified_since_is_ignored_with_if_none_match_and_on_post() {
    let page = Page::new("{}");
    let r = page
        .get()
        .header("IF_NONE_MATCH", "\"stale\"")
        .header("IF_MODIFIED_SINCE", T0_DATE)
        .run();
    assert_eq!(r.status, 200);
    let r = page
        .get()
        .method("POST")
        .header("IF_MODIFIED_SINCE", T0_DATE)
        .run();
    assert_eq!(r.status, 200);
}

#[test]
fn if_match_is_checked_before_if_none_match() {
    let page = Page::new("{}");
    let etag = page.etag();
    let r = page
        .get()
        .header("IF_MATCH", "\"nope\"")
        .header("IF_NONE_MATCH", &etag)
        .run();
    assert_eq!(r.status, 412);
}

#[test]
fn etag_covers_the_query_string() {
    let page = Page::new("{}");
    let a = page.get().env("QUERY_STRING", "id=1").run();
    let b = page.get().env("QUERY_STRING", "id=2").run();
    assert_ne!(a.header("ETag"), b.header("ETag"));
    let again = page
        .get()
        .env("QUERY_STRING", "id=2")
        .header("IF_NONE_MATCH", a.header("ETag").unwrap())
        .run();
    assert_eq!(again.status, 200, "another query's ETag must not match");
}

#[test]
fn hostile_condition_headers_are_ignored_not_fatal() {
    let page = Page::new("{}");
    let many: Vec<String> = (0..1000).map(|i| format!("\"t{i}\"")).collect();
    let cases: Vec<(&str, std::ffi::OsString)> = vec![
        ("IF_NONE_MATCH", "\"a\"".repeat(4000).into()),
        ("IF_NONE_MATCH", many.join(", ").into()),
        (
            "IF_NONE_MATCH",
            std::os::unix::ffi::OsStringExt::from_vec(b"\"\xff\xfe\"".to_vec()),
        ),
        ("IF_NONE_MATCH", "\"unterminated".into()),
        (
            "IF_MODIFIED_SINCE",
            std::os::unix::ffi::OsStringExt::from_vec(b"\xff\xfe".to_vec()),
        ),
        ("IF_MODIFIED_SINCE", "x".repeat(100_000).into()),
        (
            "IF_UNMODIFIED_SINCE",
            "Mon, 99 Foo 2023 99:99:99 GMT".into(),
        ),
        (
            "ACCEPT_ENCODING",
            std::os::unix::ffi::OsStringExt::from_vec(b"gz\xffip;q=abc".to_vec()),
        ),
        ("COOKIE", "PHPSESSID=".repeat(5000).into()),
    ];
    for (name, value) in cases {
        let r = page.get().header(name, value).run();
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.text(), "hello \n", "{name}");
    }
    let many_match = format!("{}, {}", many.join(", "), page.etag());
    let r = page.get().header("IF_NONE_MATCH", many_match).run();
    assert_eq!(r.status, 304, "a match at the end of a 1000-tag list");
}
