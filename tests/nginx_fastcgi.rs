//! Real nginx in front of the FastCGI responder, configured with the files in nginx-conf/ as
//! shipped (only ports and paths substituted): what a browser sees.

mod common;
mod fastcgi_support;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TempDir;
use fastcgi_support::http::{self, HttpResponse};
use fastcgi_support::nginx::Nginx;
use fastcgi_support::{Responder, eventually, leftovers};

/// A document root with test scripts, the responder serving it, nginx in front.
struct Site {
    dir: TempDir,
    www: PathBuf,
    nginx: Nginx,
    responder: Responder,
}

impl Site {
    fn start(label: &str) -> Option<Site> {
        let dir = TempDir::new(label);
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let socket = dir.join("hc.sock");
        let responder = Responder::start(&www, &socket, &[]);
        let nginx = Nginx::start(&dir, &www, &socket)?;
        Some(Site {
            dir,
            www,
            nginx,
            responder,
        })
    }

    /// Writes a script under the document root, optionally with its sidecar.
    fn script(&self, name: &str, text: &str, sidecar: Option<&str>) -> PathBuf {
        let path = self.dir.write(&format!("www/{name}"), text, true);
        if let Some(json) = sidecar {
            self.dir.sidecar(&format!("www/{name}"), json);
        }
        path
    }

    /// A declared page that counts its runs in a marker file outside the document root.
    fn counted_page(&self, name: &str, sidecar: &str) -> PathBuf {
        let marker = self.dir.join(&format!("{name}.runs"));
        let body = "<p>A paragraph long enough for compression to be worth it.</p>\n".repeat(40);
        self.script(
            name,
            &format!(
                "#!/bin/sh\necho run >> {}\nprintf 'Content-Type: text/html\\n\\n'\ncat <<'HTML'\n{body}HTML\n",
                marker.display()
            ),
            Some(sidecar),
        );
        // Older than the sidecar's last_modified, so that is the page's Last-Modified.
        common::set_mtime(&self.www.join(name), 1_700_000_000);
        marker
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http::get(self.nginx.addr, target, headers)
    }

    fn diagnose(&self) -> String {
        format!(
            "nginx error log:\n{}\nresponder log:\n{}",
            self.nginx.error_log(),
            self.responder.log_text()
        )
    }
}

fn runs(marker: &Path) -> usize {
    std::fs::read_to_string(marker).map_or(0, |t| t.lines().count())
}

const DECLARED: &str = r#"{"last_modified": "2024-05-01T12:00:00Z", "cache_seconds": 60}"#;

#[test]
fn validators_304_without_running_412_and_head() {
    let Some(site) = Site::start("nginx-cond") else {
        return;
    };
    let marker = site.counted_page("page.cgi", DECLARED);
    let first = site.get("/page.cgi", &[]);
    assert_eq!(first.status, 200, "{}", site.diagnose());
    let etag = first.header("ETag").expect("ETag").to_string();
    let last_modified = first.header("Last-Modified").expect("Last-Modified");
    assert_eq!(last_modified, "Wed, 01 May 2024 12:00:00 GMT");
    assert_eq!(first.header("Cache-Control"), Some("private, max-age=60"));
    assert!(first.text().contains("A paragraph"));
    assert_eq!(runs(&marker), 1);

    // 304 on If-None-Match and on If-Modified-Since; the script does not run.
    let not_modified = site.get("/page.cgi", &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("ETag"), Some(etag.as_str()));
    assert!(not_modified.body.is_empty());
    let by_date = site.get(
        "/page.cgi",
        &[("If-Modified-Since", "Wed, 01 May 2024 12:00:00 GMT")],
    );
    assert_eq!(by_date.status, 304);
    assert_eq!(runs(&marker), 1, "the script ran for a 304");

    // 412 for a failed If-Match, and for a matching If-None-Match on POST.
    let failed = site.get("/page.cgi", &[("If-Match", "\"something-else\"")]);
    assert_eq!(failed.status, 412);
    let post = http::request(
        site.nginx.addr,
        "POST",
        b"/page.cgi",
        &[("If-None-Match", &etag)],
        b"x=1",
    );
    assert_eq!(post.status, 412);
    assert_eq!(runs(&marker), 1, "the script ran for a 412");

    // HEAD: the headers of a GET, no body.
    let head = http::request(site.nginx.addr, "HEAD", b"/page.cgi", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("ETag"), Some(etag.as_str()));
    assert!(head.body.is_empty());
    let head_304 = http::request(
        site.nginx.addr,
        "HEAD",
        b"/page.cgi",
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(head_304.status, 304);

    // Sidecars are not served.
    assert_eq!(site.get("/page.cgi.conditional.json", &[]).status, 404);
}

#[test]
fn gzip_by_our_encoder_and_by_nginx_both_keep_304s_working() {
    let Some(site) = Site::start("nginx-gzip") else {
        return;
    };
    // Ours: sidecar "compress": true.
    let ours_marker = site.counted_page(
        "zipped.cgi",
        r#"{"last_modified": "2024-05-01T12:00:00Z", "compress": true}"#,
    );
    let plain = site.get("/zipped.cgi", &[]);
    let zipped = site.get("/zipped.cgi", &[("Accept-Encoding", "gzip")]);
    assert_eq!(zipped.status, 200, "{}", site.diagnose());
    assert_eq!(zipped.header("Content-Encoding"), Some("gzip"));
    let tag = zipped.header("ETag").expect("ETag").to_string();
    assert!(tag.ends_with("-gzip\""), "our variant's tag: {tag}");
    assert!(
        !tag.starts_with("W/"),
        "nginx left our encoded response alone"
    );
    assert!(
        zipped
            .header("Vary")
            .unwrap_or("")
            .contains("Accept-Encoding")
    );
    assert_eq!(gunzip(&zipped.body), plain.body);
    let again = site.get(
        "/zipped.cgi",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &tag)],
    );
    assert_eq!(again.status, 304);
    assert_eq!(runs(&ours_marker), 2);

    // nginx's: it compresses our identity text/html and weakens the ETag; the weakened tag
    // sent back still gets a 304.
    let marker = site.counted_page("page.cgi", DECLARED);
    let strong = site
        .get("/page.cgi", &[])
        .header("ETag")
        .unwrap()
        .to_string();
    let by_nginx = site.get("/page.cgi", &[("Accept-Encoding", "gzip")]);
    assert_eq!(by_nginx.header("Content-Encoding"), Some("gzip"));
    let weak = by_nginx.header("ETag").expect("ETag").to_string();
    assert_eq!(weak, format!("W/{strong}"));
    assert!(gunzip(&by_nginx.body).starts_with(b"<p>A paragraph"));
    let revalidated = site.get(
        "/page.cgi",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &weak)],
    );
    assert_eq!(revalidated.status, 304);
    assert_eq!(runs(&marker), 2);
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[test]
fn post_bodies_are_echoed_byte_exact() {
    let Some(site) = Site::start("nginx-post") else {
        return;
    };
    site.script(
        "echo.cgi",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat\n",
        None,
    );
    for size in [0usize, 1, 5_000, 65_535, 65_536, 300_000] {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 256) as u8).collect();
        let reply = http::request(site.nginx.addr, "POST", b"/echo.cgi", &[], &body);
        assert_eq!(reply.status, 200, "{}", site.diagnose());
        assert!(reply.body == body, "{size}-byte body changed on the way");
    }
}

#[test]
fn non_utf8_bytes_in_the_url_reach_the_script() {
    let Some(site) = Site::start("nginx-bytes") else {
        return;
    };
    let env = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
               printf '%s' \"$PATH_INFO\" | od -An -tx1 | tr -d ' \\n'\necho\n\
               printf '%s\\n' \"$QUERY_STRING\"\n";
    site.script("env.cgi", env, None);
    let reply = http::request(
        site.nginx.addr,
        "GET",
        b"/env.cgi/%FF%FE/x?q=%FF&r=\xe9",
        &[],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", site.diagnose());
    assert_eq!(reply.body, b"2ffffe2f78\nq=%FF&r=\xe9\n");
    // A script whose file name is not UTF-8.
    let name = std::ffi::OsStr::new(unsafe_latin1_name());
    let path = site.www.join(name);
    std::fs::write(
        &path,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ncafe\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let reply = http::request(site.nginx.addr, "GET", b"/caf%E9.cgi", &[], b"");
    assert_eq!(reply.status, 200, "{}", site.diagnose());
    assert_eq!(reply.body, b"cafe\n");
}

/// `caf\xe9.cgi` as an OsStr (Latin-1, not UTF-8).
fn unsafe_latin1_name() -> &'static std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b"caf\xe9.cgi")
}

#[test]
fn php_pages_run_under_conditional_interpreter() {
    let Some(site) = Site::start("nginx-php") else {
        return;
    };
    if common::require("php-cgi").is_none() {
        return;
    }
    // Not executable, no shebang: the location's fastcgi_param names php-cgi.
    site.dir.write(
        "www/hello.php",
        "<?php header('Content-Type: text/plain'); echo 'php says ', 1 + 1, \"\\n\";",
        false,
    );
    let reply = site.get("/hello.php", &[]);
    assert_eq!(reply.status, 200, "{}", site.diagnose());
    assert_eq!(reply.text(), "php says 2\n");
    // Declared: the 304 comes without starting php-cgi.
    let marker = site.dir.join("page.php.runs");
    site.dir.write(
        "www/page.php",
        format!(
            "<?php file_put_contents('{}', \"run\\n\", FILE_APPEND); echo 'page';",
            marker.display()
        ),
        false,
    );
    site.dir.sidecar("www/page.php", DECLARED);
    common::set_mtime(&site.www.join("page.php"), 1_700_000_000);
    let first = site.get("/page.php", &[]);
    assert_eq!(first.status, 200, "{}", site.diagnose());
    assert_eq!(first.text(), "page");
    let etag = first.header("ETag").unwrap().to_string();
    assert_eq!(
        site.get("/page.php", &[("If-None-Match", &etag)]).status,
        304
    );
    assert_eq!(runs(&marker), 1);
}

#[test]
fn a_client_leaving_mid_response_kills_the_script() {
    let Some(site) = Site::start("nginx-leave") else {
        return;
    };
    let sleeper = site.dir.join("sleeper");
    std::fs::copy("/bin/sleep", &sleeper).unwrap();
    // Streams a large body slowly, so nginx is mid-response when the client goes.
    site.script(
        "slow.cgi",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 400000 /dev/zero\n\
             {} 30\necho late\n",
            sleeper.display()
        ),
        None,
    );
    let marker = sleeper.display().to_string();
    let mut client = TcpStream::connect(site.nginx.addr).unwrap();
    std::io::Write::write_all(
        &mut client,
        b"GET /slow.cgi HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut first = [0u8; 1024];
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(client.read(&mut first).unwrap() > 0);
    assert!(eventually(Duration::from_secs(10), || !leftovers(&marker).is_empty()));
    drop(client);
    assert!(
        eventually(Duration::from_secs(10), || leftovers(&marker).is_empty()),
        "script still running after the client left: {:?}\n{}",
        leftovers(&marker),
        site.diagnose()
    );
    // And the next visitor is served.
    site.script(
        "hello.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n",
        None,
    );
    assert_eq!(site.get("/hello.cgi", &[]).text(), "hello\n");
}

#[test]
fn many_requests_over_kept_upstream_connections_all_succeed() {
    let Some(site) = Site::start("nginx-many") else {
        return;
    };
    site.counted_page("page.cgi", DECLARED);
    let etag = site
        .get("/page.cgi", &[])
        .header("ETag")
        .unwrap()
        .to_string();
    // nginx reuses its upstream connections (keepalive, fastcgi_keep_conn): a request that
    // follows an END_REQUEST at once must be taken as the next request, never as a second
    // request in parallel (which would be answered FCGI_CANT_MPX_CONN, a 502).
    for i in 0..300 {
        let reply = match i % 3 {
            0 => site.get("/page.cgi", &[]),
            _ => site.get("/page.cgi", &[("If-None-Match", &etag)]),
        };
        let want = if i % 3 == 0 { 200 } else { 304 };
        assert_eq!(reply.status, want, "request {i}: {}", site.diagnose());
    }
}

#[test]
fn a_script_failing_mid_body_never_looks_complete_to_the_client() {
    let Some(site) = Site::start("nginx-cut") else {
        return;
    };
    // Past the buffer, so the head is out before the failure; one fails, one times out.
    site.script(
        "fails.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 400000 /dev/zero\nexit 1\n",
        None,
    );
    site.script(
        "stalls.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 400000 /dev/zero\nexec sleep 30\n",
        Some(r#"{"timeout": 1}"#),
    );
    for name in ["fails.cgi", "stalls.cgi"] {
        let output = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "20"])
            .arg(format!("http://{}/{name}", site.nginx.addr))
            .output()
            .expect("run curl");
        assert!(
            !output.status.success(),
            "{name}: curl took a cut-short body for a whole one\n{}",
            site.diagnose()
        );
        // Not curl's own timeout: the response was aborted.
        assert_ne!(output.status.code(), Some(28), "{name}: curl timed out");
    }
    assert!(
        site.nginx
            .error_log()
            .contains("upstream prematurely closed"),
        "{}",
        site.diagnose()
    );
    site.script(
        "hello.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n",
        None,
    );
    assert_eq!(site.get("/hello.cgi", &[]).text(), "hello\n");
}
