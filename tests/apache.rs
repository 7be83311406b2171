//! The wrapper behind real Apache httpd 2.4, configured with the shipped `apache-conf/`
//! snippets (only their paths changed), with real php-cgi. Each test starts its own Apache
//! on a free 127.0.0.1 port and stops it by PID when done.
//!
//! Under `CI=true` a missing apache2 or php-cgi fails the tests; elsewhere they are skipped.

mod apache_support;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apache_support::{Apache, Listen, Mpm, Req, Resp, Responder};

/// The snippets every Apache in these tests loads together, as a site using all three would.
const CGI_SNIPPETS: [&str; 3] = ["action-cgi.conf", "action-php.conf", "shebang.conf"];
/// The FastCGI snippet alone: no CGI module is involved.
const FASTCGI_SNIPPETS: [&str; 1] = ["fastcgi.conf"];
/// Pages get this mtime, so Last-Modified is a known, past second.
const PAGE_MTIME: u64 = 1_700_000_000;
const PAGE_LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
/// A POST body large enough to overflow socket buffers (mod_cgid truncation).
const LARGE_BODY: usize = 1024 * 1024;

/// What runs the test pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    Sh,
    Php,
}

/// How the page is started once the wrapper (or the responder) has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Executable with its own shebang (`#!/bin/sh`).
    OwnShebang,
    /// A plain file, run by CONDITIONAL_INTERPRETER (php-cgi).
    Plain,
    /// The page's shebang names the wrapper and the interpreter.
    Shebang,
}

/// One deployment, as a snippet describes it.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    folder: &'static str,
    url: &'static str,
    ext: &'static str,
    language: Language,
    start: Start,
}

const ACTION_CGI: Variant = Variant {
    name: "action-cgi",
    folder: "legacy",
    url: "/legacy/",
    ext: "cgi",
    language: Language::Sh,
    start: Start::OwnShebang,
};
const ACTION_PHP: Variant = Variant {
    name: "action-php",
    folder: "php",
    url: "/php/",
    ext: "php",
    language: Language::Php,
    start: Start::Plain,
};
const SHEBANG_SH: Variant = Variant {
    name: "shebang-sh",
    folder: "cgi-legacy",
    url: "/cgi-legacy/",
    ext: "cgi",
    language: Language::Sh,
    start: Start::Shebang,
};
const SHEBANG_PHP: Variant = Variant {
    name: "shebang-php",
    folder: "scripts",
    url: "/scripts/",
    ext: "php",
    language: Language::Php,
    start: Start::Shebang,
};

const FASTCGI_SH: Variant = Variant {
    name: "fastcgi-sh",
    folder: "fcgi",
    url: "/fcgi/",
    ext: "cgi",
    language: Language::Sh,
    start: Start::OwnShebang,
};
const FASTCGI_PHP: Variant = Variant {
    name: "fastcgi-php",
    folder: "fcgi",
    url: "/fcgi/",
    ext: "php",
    language: Language::Php,
    start: Start::Plain,
};

/// The pages of one variant, installed under Apache's ServerRoot.
struct Pages<'a> {
    apache: &'a Apache,
    v: Variant,
}

impl<'a> Pages<'a> {
    fn install(apache: &'a Apache, v: Variant) -> Self {
        let pages = Pages { apache, v };
        let marker = pages.marker().display().to_string();
        let filler = "<p>Compressible filler text, repeated to make gzip worth it.</p>";
        pages.page(
            "page",
            &pages.body_code(&marker, ""),
            r#"{"cache_seconds": 0}"#,
        );
        pages.page(
            "zipped",
            &pages.body_code(&marker, &filler.repeat(40)),
            r#"{"compress": true, "cache_seconds": 0}"#,
        );
        let fail_message = pages.fail_message();
        let fail = match v.language {
            Language::Sh => format!(
                "echo '{fail_message}' >&2\n\
                 printf 'Content-Type: text/html\\n\\n<p>half a page'\n\
                 exit 3\n"
            ),
            Language::Php => format!(
                "<?php\n\
                 file_put_contents('php://stderr', \"{fail_message}\\n\");\n\
                 echo '<p>half a page';\n\
                 exit(3);\n"
            ),
        };
        pages.page("fail", &fail, "{}");
        let slow = match v.language {
            Language::Sh => "sleep 6\nprintf 'Content-Type: text/plain\\n\\nlate\\n'\n".to_string(),
            Language::Php => "<?php\nsleep(6);\necho \"late\\n\";\n".to_string(),
        };
        pages.page("slow", &slow, r#"{"timeout": 1}"#);
        pages
    }

    /// Writes `NAME.EXT` with the variant's first line, and its sidecar.
    fn page(&self, name: &str, code: &str, sidecar: &str) -> PathBuf {
        let first_line = match (self.v.start, self.v.language) {
            (Start::Shebang, Language::Sh) => {
                format!("#!{} /bin/sh\n", self.apache.wrapper.display())
            }
            (Start::Shebang, Language::Php) => {
                format!("#!{} /usr/bin/php-cgi\n", self.apache.wrapper.display())
            }
            (_, Language::Sh) => "#!/bin/sh\n".to_string(),
            (_, Language::Php) => String::new(),
        };
        let rel = format!("{}/{name}.{}", self.v.folder, self.v.ext);
        let executable = self.v.start != Start::Plain;
        let path = self
            .apache
            .write(&rel, format!("{first_line}{code}"), executable);
        common::set_mtime(&path, PAGE_MTIME);
        self.apache
            .write(&format!("{rel}.conditional.json"), sidecar, false);
        path
    }

    /// A page that logs each run, shows its query and SCRIPT_FILENAME, and digests a POST body.
    fn body_code(&self, marker: &str, extra_html: &str) -> String {
        match self.v.language {
            Language::Sh => format!(
                "echo \"$REQUEST_METHOD\" >> '{marker}'\n\
                 printf 'Content-Type: text/html; charset=utf-8\\n\\n'\n\
                 echo \"<p>page $QUERY_STRING</p>\"\n\
                 echo \"<p>script_filename=$SCRIPT_FILENAME</p>\"\n\
                 if [ \"$REQUEST_METHOD\" = POST ]; then\n\
                 \x20 echo \"<p>body $(head -c \"$CONTENT_LENGTH\" | md5sum | cut -d' ' -f1)</p>\"\n\
                 fi\n\
                 echo '{extra_html}'\n"
            ),
            Language::Php => format!(
                "<?php\n\
                 file_put_contents('{marker}', $_SERVER['REQUEST_METHOD'] . \"\\n\", FILE_APPEND);\n\
                 header('Content-Type: text/html; charset=utf-8');\n\
                 echo '<p>page ', $_SERVER['QUERY_STRING'], \"</p>\\n\";\n\
                 echo '<p>script_filename=', $_SERVER['SCRIPT_FILENAME'], \"</p>\\n\";\n\
                 if ($_SERVER['REQUEST_METHOD'] === 'POST') {{\n\
                 \x20   echo '<p>body ', md5(file_get_contents('php://input')), \"</p>\\n\";\n\
                 }}\n\
                 echo '{extra_html}', \"\\n\";\n"
            ),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}{name}.{}", self.v.url, self.v.ext)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.apache
            .path(&format!("{}/{name}.{}", self.v.folder, self.v.ext))
    }

    fn marker(&self) -> PathBuf {
        self.apache.path(&format!("state/{}.runs", self.v.name))
    }

    fn fail_message(&self) -> String {
        format!("{}-fail-stderr-line", self.v.name)
    }

    /// How many times the test pages have run so far.
    fn runs(&self) -> usize {
        std::fs::read_to_string(self.marker())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn get(&self, name: &str) -> Resp {
        self.apache.get(&self.url(name))
    }

    fn send(&self, req: Req) -> Resp {
        self.apache.send(&req)
    }
}

fn md5_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn pseudo_random_body(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn start(label: &str, mpm: Mpm) -> Option<Apache> {
    Apache::start(label, mpm, &CGI_SNIPPETS, "")
}

fn have_php() -> bool {
    common::require("php-cgi").is_some()
}

/// Everything the issue asks of each deployment, in one pass over its pages.
/// `wrapper_log` finds a line in the log the wrapper's own messages go to.
fn check_deployment(apache: &Apache, v: Variant, wrapper_log: &dyn Fn(&str) -> bool) {
    let pages = Pages::install(apache, v);
    let name = v.name;

    // 200 with the wrapper's validators.
    let first = pages.get("page");
    assert_eq!(first.status, 200, "{name}: first GET: {first:?}");
    let etag = first.etag();
    assert_eq!(
        first.header("Last-Modified"),
        Some(PAGE_LAST_MODIFIED),
        "{name}"
    );
    assert_eq!(
        first.header("Cache-Control"),
        Some("private, max-age=0, must-revalidate"),
        "{name}"
    );
    assert!(
        first.text().contains("<p>page </p>"),
        "{name}: {}",
        first.text()
    );
    assert_eq!(pages.runs(), 1, "{name}: the page ran once");

    // 304 and 412 without running the page.
    let not_modified =
        pages.send(Req::new("GET", &pages.url("page")).header("If-None-Match", &etag));
    assert_eq!(
        not_modified.status, 304,
        "{name}: If-None-Match: {not_modified:?}"
    );
    assert_eq!(not_modified.header("ETag"), Some(etag.as_str()), "{name}");
    let since = pages
        .send(Req::new("GET", &pages.url("page")).header("If-Modified-Since", PAGE_LAST_MODIFIED));
    assert_eq!(since.status, 304, "{name}: If-Modified-Since: {since:?}");
    let failed = pages.send(Req::new("GET", &pages.url("page")).header("If-Match", "\"other\""));
    assert_eq!(failed.status, 412, "{name}: If-Match: {failed:?}");
    assert_eq!(pages.runs(), 1, "{name}: 304 and 412 must not run the page");

    // HEAD: the GET's headers, no body; with a matching tag, 304 without running.
    let head = pages.send(Req::new("HEAD", &pages.url("page")));
    assert_eq!(head.status, 200, "{name}: HEAD");
    assert_eq!(
        head.header("ETag"),
        Some(etag.as_str()),
        "{name}: HEAD ETag"
    );
    assert!(head.body.is_empty(), "{name}: HEAD body");
    assert_eq!(pages.runs(), 2, "{name}: HEAD runs the page (as GET)");
    let head_304 = pages.send(Req::new("HEAD", &pages.url("page")).header("If-None-Match", &etag));
    assert_eq!(head_304.status, 304, "{name}: HEAD If-None-Match");
    assert_eq!(pages.runs(), 2, "{name}: HEAD 304 must not run the page");

    // A POST's body reaches the page.
    let upload = pseudo_random_body(200 * 1024);
    let posted = pages.send(
        Req::new("POST", &pages.url("page"))
            .header("Content-Type", "application/octet-stream")
            .body(upload.clone()),
    );
    assert_eq!(posted.status, 200, "{name}: POST: {}", posted.text());
    assert!(
        posted
            .text()
            .contains(&format!("<p>body {}</p>", md5_hex(&upload))),
        "{name}: POST body digest: {}",
        posted.text()
    );
    assert_eq!(pages.runs(), 3, "{name}: the POST ran the page");

    // 412 on a POST with a large body, answered without running the page: the body must be
    // read (mod_cgid shares one socket for both directions) and the answer arrive whole.
    let large = pseudo_random_body(LARGE_BODY);
    for (header, value) in [("If-None-Match", etag.as_str()), ("If-Match", "\"other\"")] {
        let refused = pages.send(
            Req::new("POST", &pages.url("page"))
                .header("Content-Type", "application/octet-stream")
                .header(header, value)
                .body(large.clone()),
        );
        assert_eq!(refused.status, 412, "{name}: POST {header}: {refused:?}");
        assert_eq!(
            refused.text(),
            "412 Precondition Failed\n",
            "{name}: POST {header}"
        );
    }
    assert_eq!(
        pages.runs(),
        3,
        "{name}: a 412 on POST must not run the page"
    );

    // gzip by the wrapper (sidecar "compress"): one encoding, a distinct tag, and that tag
    // gives a 304 without running the page.
    let plain = pages.get("zipped");
    assert_eq!(plain.status, 200, "{name}: zipped identity");
    assert!(plain.header("Content-Encoding").is_none(), "{name}");
    let zipped =
        pages.send(Req::new("GET", &pages.url("zipped")).header("Accept-Encoding", "gzip"));
    assert_eq!(zipped.status, 200, "{name}: zipped");
    assert_eq!(zipped.header("Content-Encoding"), Some("gzip"), "{name}");
    let zipped_tag = zipped.etag();
    assert_eq!(
        zipped_tag,
        format!("{}-gzip\"", plain.etag().trim_end_matches('"')),
        "{name}"
    );
    assert_eq!(zipped.decoded(), plain.body, "{name}: gunzipped body");
    assert!(
        zipped.body.len() < plain.body.len() / 2,
        "{name}: compressed"
    );
    let runs = pages.runs();
    let zipped_304 = pages.send(
        Req::new("GET", &pages.url("zipped"))
            .header("Accept-Encoding", "gzip")
            .header("If-None-Match", &zipped_tag),
    );
    assert_eq!(zipped_304.status, 304, "{name}: gzip tag: {zipped_304:?}");
    assert_eq!(pages.runs(), runs, "{name}: gzip 304 must not run the page");

    // mod_deflate in front (AddOutputFilterByType DEFLATE text/html) appends -gzip to our
    // tag; a request carrying that tag still gets a 304 without running the page.
    let deflated =
        pages.send(Req::new("GET", &pages.url("page")).header("Accept-Encoding", "gzip"));
    assert_eq!(deflated.status, 200, "{name}: mod_deflate");
    assert_eq!(
        deflated.header("Content-Encoding"),
        Some("gzip"),
        "{name}: mod_deflate"
    );
    let deflated_tag = deflated.etag();
    assert_eq!(
        deflated_tag,
        format!("{}-gzip\"", etag.trim_end_matches('"')),
        "{name}"
    );
    assert!(
        String::from_utf8_lossy(&deflated.decoded()).contains("<p>page </p>"),
        "{name}: mod_deflate body"
    );
    let runs = pages.runs();
    let deflated_304 = pages.send(
        Req::new("GET", &pages.url("page"))
            .header("Accept-Encoding", "gzip")
            .header("If-None-Match", &deflated_tag),
    );
    assert_eq!(
        deflated_304.status, 304,
        "{name}: -gzip tag: {deflated_304:?}"
    );
    assert_eq!(
        pages.runs(),
        runs,
        "{name}: -gzip 304 must not run the page"
    );

    // A search word that names an executable is never run (RFC 3875 §4.4 arguments).
    let evil_ran = apache.path("state/evil-ran");
    let evil = apache.write(
        "evil/run-me.sh",
        format!("#!/bin/sh\necho ran >> '{}'\n", evil_ran.display()),
        true,
    );
    for query in [evil.display().to_string(), "/bin/sh".to_string()] {
        let url = format!("{}?{query}", pages.url("page"));
        let served = apache.get(&url);
        assert_eq!(served.status, 200, "{name}: ?{query}: {served:?}");
        assert!(
            served.text().contains(&format!("<p>page {query}</p>")),
            "{name}: ?{query} must serve the page: {}",
            served.text()
        );
    }
    assert!(!evil_ran.exists(), "{name}: a search word was executed");

    // A page that fails after printing half of its answer: 502 with a short body and none of
    // the half page; its stderr in Apache's error log.
    let failing = pages.get("fail");
    assert_eq!(failing.status, 502, "{name}: failing page: {failing:?}");
    assert!(
        failing.body.len() < 200,
        "{name}: short 502 body: {}",
        failing.text()
    );
    assert!(
        !failing.text().contains("half a page"),
        "{name}: partial body sent"
    );
    assert!(
        apache.error_log_gets(&pages.fail_message()),
        "{name}: the page's stderr is not in the error log:\n{}",
        apache.error_log()
    );
    assert!(
        wrapper_log(&format!("http-conditional: fail.{}", v.ext)),
        "{name}: the wrapper's message naming the page is not logged"
    );

    // A page past its sidecar's timeout: the wrapper's 504, well before Apache's Timeout,
    // and nothing of it left running.
    let started = Instant::now();
    let slow = pages.get("slow");
    assert_eq!(slow.status, 504, "{name}: slow page: {slow:?}");
    assert!(slow.text().contains("timed out"), "{name}: {}", slow.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{name}: 504 took {:?}",
        started.elapsed()
    );
    let slow_path = pages.path("slow").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !common::processes_matching(&slow_path).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        common::processes_matching(&slow_path).is_empty(),
        "{name}: the slow page still runs: {:?}",
        common::processes_matching(&slow_path)
    );
}

#[test]
fn action_handler_for_cgi_pages_under_event_mpm_and_mod_cgid() {
    let Some(apache) = start("action-cgi", Mpm::EventCgid) else {
        return;
    };
    check_deployment(&apache, ACTION_CGI, &|l| apache.error_log_gets(l));

    // Under Action, Apache's SCRIPT_FILENAME names the handler; the wrapper picks the page
    // (from PATH_TRANSLATED) and the page sees SCRIPT_FILENAME naming itself.
    let page = apache.get("/legacy/page.cgi?which");
    let expected = apache.path("legacy/page.cgi").display().to_string();
    assert!(
        page.text()
            .contains(&format!("<p>script_filename={expected}</p>")),
        "{}",
        page.text()
    );
    assert!(page.text().contains("<p>page which</p>"), "{}", page.text());
}

#[test]
fn action_handler_for_cgi_pages_under_prefork_and_mod_cgi() {
    let Some(apache) = start("action-cgi-prefork", Mpm::PreforkCgi) else {
        return;
    };
    check_deployment(&apache, ACTION_CGI, &|l| apache.error_log_gets(l));
}

#[test]
fn action_handler_runs_plain_php_pages_with_php_cgi() {
    if !have_php() {
        return;
    }
    let Some(apache) = start("action-php", Mpm::EventCgid) else {
        return;
    };
    check_deployment(&apache, ACTION_PHP, &|l| apache.error_log_gets(l));
    // php-cgi ran the page (from PATH_TRANSLATED and REDIRECT_URL), not the handler.
    let page = apache.get("/php/page.php");
    let expected = apache.path("php/page.php").display().to_string();
    assert!(
        page.text()
            .contains(&format!("<p>script_filename={expected}</p>")),
        "{}",
        page.text()
    );
}

#[test]
fn shebang_sh_scripts_under_script_alias() {
    let Some(apache) = start("shebang-sh", Mpm::EventCgid) else {
        return;
    };
    check_deployment(&apache, SHEBANG_SH, &|l| apache.error_log_gets(l));
}

#[test]
fn shebang_php_scripts_under_exec_cgi() {
    if !have_php() {
        return;
    }
    let Some(apache) = start("shebang-php", Mpm::EventCgid) else {
        return;
    };
    check_deployment(&apache, SHEBANG_PHP, &|l| apache.error_log_gets(l));
}

#[test]
fn fastcgi_responder_behind_mod_proxy_fcgi() {
    let Some(apache) = Apache::start("fastcgi", Mpm::EventCgid, &FASTCGI_SNIPPETS, "") else {
        return;
    };
    let responder = Responder::start(&apache, Listen::Path);
    check_deployment(&apache, FASTCGI_SH, &|l| responder.log_gets(l));
    if have_php() {
        check_deployment(&apache, FASTCGI_PHP, &|l| responder.log_gets(l));
    }
}

#[test]
fn fastcgi_responder_on_a_socket_handed_over_as_fd_0() {
    let Some(apache) = Apache::start("fastcgi-fd0", Mpm::EventCgid, &FASTCGI_SNIPPETS, "") else {
        return;
    };
    let _responder = Responder::start(&apache, Listen::Inherited);
    let pages = Pages::install(&apache, FASTCGI_SH);
    let first = pages.get("page");
    assert_eq!(first.status, 200, "{first:?}");
    let again =
        pages.send(Req::new("GET", &pages.url("page")).header("If-None-Match", &first.etag()));
    assert_eq!(again.status, 304, "{again:?}");
    assert_eq!(pages.runs(), 1);
}

#[test]
fn example_news_php_probe_and_session_php_through_action() {
    if !have_php() {
        return;
    }
    let extra = "<Location \"/http-conditional-php/\">\n    \
                 SetEnv CONDITIONAL_SESSION_DIR \"{root}/sessions\"\n</Location>\n";
    let Some(apache) = Apache::start("examples-php", Mpm::EventCgid, &CGI_SNIPPETS, extra) else {
        return;
    };
    let examples = apache.dir.examples();
    for file in [
        "news.php",
        "news.php.conditional.json",
        "news-data.json",
        "session.php",
    ] {
        std::fs::copy(examples.join(file), apache.path(&format!("php/{file}"))).unwrap();
    }
    let sessions = apache.path("sessions").display().to_string();
    apache.write(
        "php/session.php.conditional.json",
        format!(
            r#"{{"session": {{"cookie": "PHPSESSID", "save_path": "{sessions}"}}, "interpreter": "/usr/bin/php-cgi", "cache_seconds": 0}}"#
        ),
        false,
    );
    common::set_mtime(&apache.path("php/news.php"), PAGE_MTIME);
    common::set_mtime(&apache.path("php/session.php"), PAGE_MTIME);

    // news.php: the probe (php-cgi with CONDITIONAL_PROBE=1) gives the data's time.
    let news = apache.get("/php/news.php");
    assert_eq!(news.status, 200, "{news:?}");
    assert_eq!(
        news.header("Last-Modified"),
        Some("Sat, 15 Jun 2024 09:30:00 GMT")
    );
    assert!(
        news.text().contains("Library opening hours extended"),
        "{}",
        news.text()
    );
    let tag = news.etag();
    let again = apache.send(&Req::new("GET", "/php/news.php").header("If-None-Match", &tag));
    assert_eq!(again.status, 304, "{again:?}");
    let since = apache.send(
        &Req::new("GET", "/php/news.php")
            .header("If-Modified-Since", "Sat, 15 Jun 2024 09:30:00 GMT"),
    );
    assert_eq!(since.status, 304, "{since:?}");
    let older = apache.send(
        &Req::new("GET", "/php/news.php")
            .header("If-Modified-Since", "Fri, 14 Jun 2024 09:30:00 GMT"),
    );
    assert_eq!(older.status, 200);

    // session.php: the ETag covers the visitor's session.
    let first = apache.get("/php/session.php");
    assert_eq!(first.status, 200, "{first:?}");
    let cookie = first
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let with_cookie = |query: &str, tag: Option<&str>| {
        let mut req =
            Req::new("GET", &format!("/php/session.php{query}")).header("Cookie", &cookie);
        if let Some(tag) = tag {
            req = req.header("If-None-Match", tag);
        }
        apache.send(&req)
    };
    let seen = with_cookie("", None);
    assert_eq!(seen.status, 200);
    assert!(seen.text().contains("visits: 0"), "{}", seen.text());
    assert!(
        seen.header("Vary").unwrap_or_default().contains("Cookie"),
        "{seen:?}"
    );
    let session_tag = seen.etag();
    assert_eq!(with_cookie("", Some(&session_tag)).status, 304);
    let visit = with_cookie("?visit=1", None);
    assert!(visit.text().contains("visits: 1"), "{}", visit.text());
    let changed = with_cookie("", Some(&session_tag));
    assert_eq!(
        changed.status, 200,
        "a changed session must give a new ETag"
    );
    assert!(changed.text().contains("visits: 1"), "{}", changed.text());
    assert_ne!(changed.etag(), session_tag);
}

#[test]
fn handler_urls_refuse_direct_requests_and_sidecars_are_not_served() {
    let Some(apache) = start("guards", Mpm::EventCgid) else {
        return;
    };
    let pages = Pages::install(&apache, ACTION_CGI);
    assert_eq!(pages.get("page").status, 200);
    let runs = pages.runs();
    for url in [
        "/http-conditional-bin/http-conditional/legacy/page.cgi",
        "/http-conditional-php/http-conditional/legacy/page.cgi",
        "/http-conditional-bin/http-conditional",
        "/legacy/page.cgi.conditional.json",
    ] {
        let resp = apache.get(url);
        assert_eq!(resp.status, 403, "{url}: {resp:?}");
    }
    assert_eq!(
        pages.runs(),
        runs,
        "a direct request to the handler ran a page"
    );
}

#[test]
fn pass_through_page_without_sidecar_under_action() {
    let Some(apache) = start("pass-through", Mpm::EventCgid) else {
        return;
    };
    let marker = apache.path("state/own.runs");
    apache.write(
        "legacy/own.cgi",
        format!(
            "#!/bin/sh\necho run >> '{}'\nprintf 'Content-Type: text/html\\nETag: \"own-1\"\\n\\n<p>own</p>\\n'\n",
            marker.display()
        ),
        true,
    );
    let first = apache.get("/legacy/own.cgi");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ETag"), Some("\"own-1\""));
    // Without a sidecar the page runs, and its own ETag still saves the body.
    let again =
        apache.send(&Req::new("GET", "/legacy/own.cgi").header("If-None-Match", "\"own-1\""));
    assert_eq!(again.status, 304, "{again:?}");
    let runs = std::fs::read_to_string(&marker).unwrap().lines().count();
    assert_eq!(runs, 2, "a page without a sidecar runs on every request");
}

/// A page that dies before printing anything (a legacy script whose first command fails):
/// its stderr must reach the error log every time.
#[test]
fn stderr_of_a_page_that_dies_before_any_output_is_logged() {
    let Some(apache) = start("silent-failure", Mpm::EventCgid) else {
        return;
    };
    for i in 0..10 {
        apache.write(
            &format!("legacy/die{i}.cgi"),
            format!("#!/bin/sh\necho 'died-before-output-{i}' >&2\nexit 3\n"),
            true,
        );
        apache.write(&format!("legacy/die{i}.cgi.conditional.json"), "{}", false);
        let resp = apache.get(&format!("/legacy/die{i}.cgi"));
        assert_eq!(resp.status, 502, "{resp:?}");
    }
    for i in 0..10 {
        assert!(
            apache.error_log_gets(&format!("died-before-output-{i}")),
            "stderr of die{i}.cgi is missing from the error log:\n{}",
            apache.error_log()
        );
    }
}

/// CONDITIONAL_TIMEOUT counts on the handler's location; set on the pages' folder, Action
/// renames it REDIRECT_CONDITIONAL_TIMEOUT and the wrapper keeps its default.
#[test]
fn settings_belong_on_the_handler_location_not_the_pages_folder() {
    let extra = "<Location \"/http-conditional-bin/\">\n    SetEnv CONDITIONAL_TIMEOUT 1\n</Location>\n\
                 <Directory \"{root}/php\">\n    SetEnv CONDITIONAL_TIMEOUT 1\n</Directory>\n";
    let Some(apache) = Apache::start("settings", Mpm::EventCgid, &CGI_SNIPPETS, extra) else {
        return;
    };
    apache.write(
        "legacy/slow.cgi",
        "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\n\\nlate\\n'\n",
        true,
    );
    let started = Instant::now();
    let on_handler = apache.get("/legacy/slow.cgi");
    assert_eq!(on_handler.status, 504, "{on_handler:?}");
    assert!(started.elapsed() < Duration::from_millis(2500));

    if !have_php() {
        return;
    }
    apache.write(
        "php/slow.php",
        "<?php\nsleep(2);\necho 'renamed=', getenv('REDIRECT_CONDITIONAL_TIMEOUT'), \"\\n\";\n",
        false,
    );
    let on_folder = apache.get("/php/slow.php");
    assert_eq!(on_folder.status, 200, "{on_folder:?}");
    assert_eq!(on_folder.text().trim(), "renamed=1");
}
