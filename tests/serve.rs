//! `serve` driven through real HTTP clients (ureq, curl and raw sockets) on 127.0.0.1.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spawned, TempDir, bin, free_port, require, set_mtime, wait_for_port};

/// The sidecar's `last_modified`, newer than the script file's own mtime.
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

/// A temp root with scripts, a folder outside it, and `serve` running over the root.
struct Server {
    dir: TempDir,
    root: PathBuf,
    port: u16,
    log: PathBuf,
    process: Spawned,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// With extra `serve` flags (the limits).
    fn start_with(flags: &[&str]) -> Server {
        let dir = TempDir::new("serve");
        let root = dir.path.join("root");
        write_fixtures(&dir);
        let log = dir.path.join("serve.log");
        let (process, port) =
            common::start_serve(&root, &log, flags, "/usr/local/bin:/usr/bin:/bin");
        Server {
            dir,
            root,
            port,
            log,
            process,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing every needle.
    fn log_line(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no log line with {needles:?} in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's thread count (tokio's workers and blocking pool).
    fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("Threads: in /proc/PID/status")
    }

    /// How many times `page.cgi` has run.
    fn page_runs(&self) -> usize {
        std::fs::read_to_string(self.root.join("runs.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn write_fixtures(dir: &TempDir) {
    let page = dir.write(
        "root/page.cgi",
        "#!/bin/sh\necho run >> runs.log\nprintf 'Content-Type: text/plain\\n\\n'\n\
         i=0; while [ $i -lt 40 ]; do echo \"hello from page, line $i\"; i=$((i+1)); done\n",
        true,
    );
    set_mtime(&page, 1_000_000_000);
    dir.sidecar(
        "root/page.cgi",
        r#"{"last_modified": 1700000000, "cache_seconds": 60, "cache_privacy": "public", "compress": true}"#,
    );
    dir.write(
        "root/echo.cgi",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat\n",
        true,
    );
    dir.write(
        "root/body.cgi",
        "#!/bin/sh\necho run >> body-runs.log\nprintf 'Content-Type: text/plain\\n\\n'\n\
         echo \"CONTENT_LENGTH=${CONTENT_LENGTH-unset} read=$(wc -c | tr -d ' ')\"\n\
         echo \"TRANSFER_ENCODING=${HTTP_TRANSFER_ENCODING-unset}\"\n",
        true,
    );
    dir.write(
        "root/sub/env.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         for v in SCRIPT_NAME PATH_INFO QUERY_STRING REQUEST_METHOD HTTP_X_TEST SERVER_PORT \
         SERVER_NAME HTTP_HOST; do\n\
         eval \"echo $v=\\$$v\"; done\n\
         echo X_BIG_LENGTH=${#HTTP_X_BIG}\n\
         [ -n \"$PATH\" ] && echo PATH=set\n\
         printf 'first complaint\\nsecond, unterminated' >&2\n",
        true,
    );
    dir.write(
        "root/stream.cgi",
        "#!/bin/sh\necho $$ > stream.pid\nprintf 'Content-Type: text/plain\\n\\n'\n\
         head -c 300000 /dev/zero | tr '\\000' a\nexec sleep 30\n",
        true,
    );
    dir.write(
        "root/quiet.cgi",
        "#!/bin/sh\necho $$ > quiet.pid\nexec sleep 30\n",
        true,
    );
    dir.write(
        "outside/evil.cgi",
        "#!/bin/sh\ntouch \"$(dirname \"$0\")/evil-ran\"\nprintf 'Content-Type: text/plain\\n\\nescaped\\n'\n",
        true,
    );
    std::os::unix::fs::symlink("../outside/evil.cgi", dir.join("root/link.cgi")).unwrap();
    std::os::unix::fs::symlink("../outside", dir.join("root/linkdir")).unwrap();
}

/// A response as ureq got it (identity coding unless asked otherwise).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("read body");
    Reply {
        status: response.status().as_u16(),
        headers,
        body,
    }
}

fn get(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = agent.get(url).header("Accept-Encoding", "identity");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    reply(request.call().expect("GET"))
}

/// Sends raw request bytes on a fresh connection and returns the status code.
fn raw_status(port: u16, target: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Reads one response from a keep-alive connection: status, headers, body by Content-Length.
fn read_response(stream: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let status = lines.next().and_then(|l| l.get(9..12)).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("response body");
    (status.parse().unwrap(), headers, body)
}

fn process_alive(pid_file: &Path) -> Option<bool> {
    let pid = std::fs::read_to_string(pid_file).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok();
    // A zombie is dead too; only a running or sleeping process counts.
    Some(status.is_some_and(|s| !s.contains("State:\tZ")))
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    done()
}

#[test]
fn declared_script_gets_validators_and_304_or_412_without_running() {
    let server = Server::start();
    let agent = agent();
    let url = server.url("/page.cgi");

    let first = get(&agent, &url, &[]);
    assert_eq!(first.status, 200);
    let etag = first.header("etag").expect("ETag").to_string();
    assert_eq!(first.header("last-modified"), Some(LAST_MODIFIED));
    assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
    assert!(first.header("expires").is_some());
    assert!(String::from_utf8_lossy(&first.body).contains("hello from page, line 39"));
    assert_eq!(server.page_runs(), 1);

    let by_tag = get(&agent, &url, &[("If-None-Match", &etag)]);
    assert_eq!(by_tag.status, 304);
    assert!(by_tag.body.is_empty());
    assert_eq!(by_tag.header("etag"), Some(etag.as_str()));
    assert_eq!(by_tag.header("cache-control"), Some("public, max-age=60"));

    let by_date = get(&agent, &url, &[("If-Modified-Since", LAST_MODIFIED)]);
    assert_eq!(by_date.status, 304);
    assert_eq!(server.page_runs(), 1, "a 304 must not run the script");

    let older = get(
        &agent,
        &url,
        &[("If-Modified-Since", "Mon, 13 Nov 2023 00:00:00 GMT")],
    );
    assert_eq!(older.status, 200);
    assert_eq!(server.page_runs(), 2);

    let failed = reply(
        agent
            .post(&url)
            .header("If-Match", "\"not-the-tag\"")
            .send(&b"data"[..])
            .expect("POST"),
    );
    assert_eq!(failed.status, 412);
    let unmodified = reply(
        agent
            .put(&url)
            .header("If-Unmodified-Since", "Mon, 13 Nov 2023 00:00:00 GMT")
            .send(&b"data"[..])
            .expect("PUT"),
    );
    assert_eq!(unmodified.status, 412);
    assert_eq!(server.page_runs(), 2, "a 412 must not run the script");

    let line = server.log_line(&["GET /page.cgi 304", "If-None-Match matched"]);
    assert!(line.contains("without running the script"), "{line}");
    server.log_line(&["GET /page.cgi 304", "not modified since If-Modified-Since"]);
    server.log_line(&["POST /page.cgi 412", "If-Match"]);
    server.log_line(&["GET /page.cgi 200", "ran script", " ms"]);
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let server = Server::start();
    let agent = agent();
    let url = server.url("/page.cgi");
    let got = get(&agent, &url, &[]);
    let head = reply(
        agent
            .head(&url)
            .header("Accept-Encoding", "identity")
            .call()
            .expect("HEAD"),
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in [
        "etag",
        "last-modified",
        "cache-control",
        "content-type",
        "content-length",
    ] {
        assert_eq!(head.header(name), got.header(name), "{name}");
    }
    assert_eq!(
        head.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    let tag = got.header("etag").unwrap().to_string();
    let not_modified = reply(
        agent
            .head(&url)
            .header("Accept-Encoding", "identity")
            .header("If-None-Match", &tag)
            .call()
            .expect("HEAD"),
    );
    assert_eq!(not_modified.status, 304);
}

#[test]
fn gzip_is_negotiated_and_decodes_to_the_original() {
    let Some(curl) = require("curl") else { return };
    let server = Server::start();
    let url = server.url("/page.cgi");
    let fetch = |extra: &[&str]| {
        let head = server.dir.path.join("head.txt");
        let out = Command::new(&curl)
            .args(["-s", "-D"])
            .arg(&head)
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        (std::fs::read_to_string(head).unwrap(), out.stdout)
    };
    let (plain_head, plain) = fetch(&[]);
    let (gz_head, gz) = fetch(&["-H", "Accept-Encoding: gzip"]);
    let lower = gz_head.to_ascii_lowercase();
    assert!(lower.contains("content-encoding: gzip"), "{gz_head}");
    assert!(lower.contains("vary: accept-encoding"), "{gz_head}");
    assert!(gz.len() < plain.len());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
    let tag_of = |head: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("etag:"))
            .map(|l| l[5..].trim().to_string())
            .unwrap()
    };
    let gz_tag = tag_of(&gz_head);
    assert_ne!(
        gz_tag,
        tag_of(&plain_head),
        "the gzip variant has its own ETag"
    );
    let out = Command::new(&curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Accept-Encoding: gzip", "-H"])
        .arg(format!("If-None-Match: {gz_tag}"))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304");
}

#[test]
fn post_body_reaches_the_script_byte_exact() {
    let server = Server::start();
    let agent = agent();
    let url = server.url("/echo.cgi");
    for size in [0usize, 100 * 1024, 3 * 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        let echoed = reply(agent.post(&url).send(&body[..]).expect("POST"));
        assert_eq!(echoed.status, 200);
        assert_eq!(echoed.body.len(), body.len());
        assert!(
            echoed.body == body,
            "body of {size} bytes changed on its way"
        );
    }
    // A chunked upload has no CONTENT_LENGTH; the script reads to the end.
    if let Some(curl) = require("curl") {
        let file = server.dir.path.join("upload.bin");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&file, &body).unwrap();
        let out = Command::new(curl)
            .args(["-s", "-H", "Transfer-Encoding: chunked", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.stdout == body, "chunked upload changed on its way");
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = |stream: &mut TcpStream, extra: &str| {
        write!(
            stream,
            "GET /page.cgi HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n"
        )
        .unwrap();
        read_response(stream)
    };
    let (status, headers, body) = request(&mut stream, "");
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let etag = headers.iter().find(|(n, _)| n == "etag").unwrap().1.clone();
    let (status, _, body) = request(&mut stream, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, _) = request(&mut stream, "");
    assert_eq!(status, 200);

    if let Some(curl) = require("curl") {
        let url = server.url("/page.cgi");
        let out = Command::new(curl)
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{num_connects} "])
            .args([&url, &url, &url])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1 0 0 ");
    }
}

#[test]
fn scripts_outside_the_root_are_refused() {
    let server = Server::start();
    assert_eq!(raw_status(server.port, "/../outside/evil.cgi"), 403);
    assert_eq!(raw_status(server.port, "/%2e%2e/outside/evil.cgi"), 403);
    assert_eq!(
        raw_status(server.port, "/sub/%2E%2E/%2e%2e/outside/evil.cgi"),
        403
    );
    assert_eq!(raw_status(server.port, "/..%2foutside%2fevil.cgi"), 404);
    assert_eq!(raw_status(server.port, "/link.cgi"), 403);
    assert_eq!(raw_status(server.port, "/linkdir/evil.cgi"), 403);
    assert_eq!(raw_status(server.port, "/missing.cgi"), 404);
    assert_eq!(raw_status(server.port, "/sub/"), 404);
    assert!(
        !server.dir.join("outside/evil-ran").exists(),
        "a script outside the root ran"
    );
    server.log_line(&["/link.cgi 403"]);
}

#[test]
fn path_info_and_query_string_reach_the_script() {
    let server = Server::start();
    let page = get(
        &agent(),
        &server.url("/sub/env.cgi/extra/path?a=1&b=%20x"),
        &[("X-Test", "yes")],
    );
    assert_eq!(page.status, 200);
    let text = String::from_utf8_lossy(&page.body).into_owned();
    for line in [
        "SCRIPT_NAME=/sub/env.cgi",
        "PATH_INFO=/extra/path",
        "QUERY_STRING=a=1&b=%20x",
        "REQUEST_METHOD=GET",
        "HTTP_X_TEST=yes",
        &format!("SERVER_PORT={}", server.port),
        "PATH=set",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
    // The script's stderr reaches the server's, line by line, with the script's name.
    server.log_line(&["/sub/env.cgi: first complaint"]);
    server.log_line(&["/sub/env.cgi: second, unterminated"]);
}

#[test]
fn a_client_that_leaves_kills_its_script_and_the_server_goes_on() {
    let server = Server::start();
    // Mid-body: the script has written 300 000 bytes (more than the engine buffers, so they
    // stream) and sleeps without ending its response; only the abort can stop it.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /stream.cgi HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while got.len() < 300_000 {
        let n = stream.read(&mut chunk).expect("the streamed body");
        assert!(n > 0, "response ended early");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "the response ended although the script runs"
    );
    let pid_file = server.root.join("stream.pid");
    assert_eq!(process_alive(&pid_file), Some(true), "script not running");
    drop(stream);
    assert!(
        wait_until(Duration::from_secs(5), || process_alive(&pid_file)
            == Some(false)),
        "the script outlived its client"
    );
    server.log_line(&["GET /stream.cgi 200", "cut short"]);

    // Before the head: the script has printed nothing yet.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(stream, "GET /quiet.cgi HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let pid_file = server.root.join("quiet.pid");
    assert!(wait_until(Duration::from_secs(5), || process_alive(
        &pid_file
    ) == Some(true)));
    drop(stream);
    assert!(
        wait_until(Duration::from_secs(5), || process_alive(&pid_file)
            == Some(false)),
        "the silent script outlived its client"
    );

    let page = get(&agent(), &server.url("/page.cgi"), &[]);
    assert_eq!(page.status, 200);
}

#[test]
fn sigterm_and_ctrl_c_stop_the_server_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut server = Server::start();
        assert_eq!(get(&agent(), &server.url("/page.cgi"), &[]).status, 200);
        let pid = libc::pid_t::try_from(server.process.pid()).unwrap();
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, signal) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = server.process.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "still running");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}\n{}", server.log());
        assert!(server.log().contains("stopped"));
    }
}

#[test]
fn a_script_failing_mid_body_never_ends_its_response_cleanly() {
    let server = Server::start();
    // Past the buffer, so the head is out before the script fails.
    server.dir.write(
        "root/fails.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 400000 /dev/zero\nexit 1\n",
        true,
    );
    // A client that reads nothing until the script has failed: the response channel is full
    // when the failure comes, which must not drop it.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /fails.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut got = Vec::new();
    let read = stream.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "the head was sent (read {read:?}, {} bytes: {:?})",
        got.len(),
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "a cut-short body ended like a whole one ({} bytes)",
        got.len()
    );
    server.log_line(&["GET /fails.cgi 200", "cut short"]);

    // A real client sees an error, not a clean end.
    let mut response = agent().get(&server.url("/fails.cgi")).call().expect("head");
    assert_eq!(response.status().as_u16(), 200);
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec();
    assert!(body.is_err(), "the client read a complete-looking body");

    let page = get(&agent(), &server.url("/page.cgi"), &[]);
    assert_eq!(page.status, 200);
}

#[test]
fn an_invalid_timeout_is_refused_at_start_up_by_serve_and_fastcgi() {
    let dir = TempDir::new("serve-timeout");
    for command in ["serve", "fastcgi"] {
        let output = Command::new(bin())
            .args([command, "--root"])
            .arg(&dir.path)
            .args(["--listen", "127.0.0.1:1", "--timeout", "0"])
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command} started");
        assert!(stderr.contains("--timeout"), "{command}: {stderr}");
    }
}

/// Sends `request` on a fresh connection (write errors ignored: a server that refuses may
/// close before it has all of it) and returns the status and body text; `None` when the
/// connection closes without a response.
fn exchange(port: u16, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// A chunked request body, in chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// True when the server has closed `stream` (end of file or reset), false when it is still
/// open after the read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn a_chunked_upload_reaches_the_script_with_its_content_length() {
    // RFC 3875 §4.1.2: CONTENT_LENGTH is the length of the body the script gets.
    let server = Server::start();
    for size in [10usize, 200_000] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let mut request = b"POST /body.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        request.extend_from_slice(&chunked(&body, 7_000));
        let (status, text) = exchange(server.port, &request).expect("a response");
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains(&format!("CONTENT_LENGTH={size} read={size}\n")),
            "{size} bytes: {text}"
        );
        assert!(text.contains("TRANSFER_ENCODING=unset"), "{text}");
    }
    // A request without a body gets no CONTENT_LENGTH.
    let (_, text) = exchange(
        server.port,
        b"GET /body.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(text.contains("CONTENT_LENGTH=unset read=0"), "{text}");

    // php-cgi reads a form only with CONTENT_LENGTH: with it, $_POST is filled.
    let Some(php) = require("php-cgi") else {
        return;
    };
    server.dir.write(
        "root/form.php",
        "<?php echo 'name=', $_POST['name'] ?? '(empty)', \"\\n\";\n",
        false,
    );
    server.dir.sidecar(
        "root/form.php",
        &format!(r#"{{"interpreter": "{}"}}"#, php.display()),
    );
    let mut request = b"POST /form.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                        Content-Type: application/x-www-form-urlencoded\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    request.extend_from_slice(&chunked(b"name=chunked&other=1", 5));
    let (status, text) = exchange(server.port, &request).expect("a response");
    assert_eq!((status, text.as_str()), (200, "name=chunked\n"));
}

#[test]
fn a_body_past_max_body_size_is_413_and_the_script_does_not_run() {
    let server = Server::start_with(&["--max-body-size", "100k"]);
    let runs = || {
        std::fs::read_to_string(server.root.join("body-runs.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // Announced too large: refused before the body is read, and without `100 Continue`.
    let (status, text) = exchange(
        server.port,
        b"POST /body.cgi HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .expect("a response");
    assert_eq!(status, 413, "{text}");
    // Chunked, found too large on the way.
    let mut request =
        b"POST /body.cgi HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(&chunked(&vec![b'x'; 150 * 1024], 16 * 1024));
    let (status, _) = exchange(server.port, &request).expect("a response");
    assert_eq!(status, 413);
    assert_eq!(runs(), 0, "the script ran for a refused body");
    server.log_line(&["POST /body.cgi 413", "larger than 102400 bytes"]);
    // Exactly at the limit is accepted, by way of the temp file.
    let mut request = b"POST /body.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                        Content-Length: 102400\r\n\r\n"
        .to_vec();
    request.extend_from_slice(&vec![b'y'; 100 * 1024]);
    let (status, text) = exchange(server.port, &request).expect("a response");
    assert_eq!(status, 200);
    assert!(text.contains("CONTENT_LENGTH=102400 read=102400"), "{text}");
}

#[test]
fn trickled_uploads_hold_no_thread_and_a_stalled_one_gets_408() {
    let server = Server::start_with(&["--body-timeout", "3"]);
    let agent = agent();
    let page = get(&agent, &server.url("/page.cgi"), &[]);
    let etag = page.header("etag").unwrap().to_string();
    let baseline = server.threads();
    // Forty uploads to an answer given without running the script (412: If-None-Match
    // matches on a POST), each stalled after a few bytes of its body.
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            write!(
                stream,
                "POST /page.cgi HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\
                 Content-Length: 1000\r\n\r\nfirst bytes"
            )
            .unwrap();
            stream
        })
        .collect();
    // Meanwhile other clients are served, and no thread waits for the forty.
    let other = get(&agent, &server.url("/page.cgi"), &[]);
    assert_eq!(other.status, 200);
    let during = server.threads();
    assert!(
        during < baseline + 10,
        "{during} threads with 40 stalled uploads, {baseline} before"
    );
    // A body that trickles in a byte at a time, each well within the timeout, is whole.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        slow,
        "POST /body.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\n"
    )
    .unwrap();
    for byte in b"abcd" {
        std::thread::sleep(Duration::from_millis(300));
        slow.write_all(&[*byte]).unwrap();
    }
    let (status, _, body) = read_response(&mut slow);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("CONTENT_LENGTH=4 read=4"));
    // The stalled ones get 408 once their body has been silent for --body-timeout, and
    // their connections close.
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (status, headers, _) = read_response(stream);
        assert_eq!(status, 408);
        assert!(headers.contains(&("connection".to_string(), "close".to_string())));
        assert!(closed_by_server(stream));
    }
    assert_eq!(server.page_runs(), 2, "a 412 ran the script");
    server.log_line(&["POST /page.cgi 408", "sent nothing of its body"]);
}

#[test]
fn a_slow_loris_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let server = Server::start_with(&["--header-timeout", "1"]);
    let mut loris = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    loris
        .write_all(b"GET /page.cgi HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    assert_eq!(raw_status(server.port, "/page.cgi"), 200);
    assert!(closed_by_server(&mut loris), "the half-sent head held on");
    assert!(closed_by_server(&mut idle), "the silent connection held on");
    assert_eq!(raw_status(server.port, "/page.cgi"), 200);
}

#[test]
fn connections_past_the_cap_are_closed_at_once_and_logged_once() {
    let server = Server::start_with(&["--max-connections", "20"]);
    // Twenty kept-alive connections, each known to be admitted by the answer it got.
    let held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(stream, "GET /missing.cgi HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut stream).0, 404);
            stream
        })
        .collect();
    for _ in 0..5 {
        let mut extra = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        assert!(
            closed_by_server(&mut extra),
            "a connection past the cap was kept"
        );
    }
    drop(held);
    // Once some close, new connections are served again.
    assert!(
        wait_until(Duration::from_secs(10), || exchange(
            server.port,
            b"GET /page.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .is_some_and(|(status, _)| status == 200)),
        "not serving after the cap episode:\n{}",
        server.log()
    );
    server.log_line(&["accepting connections again ("]);
    let log = server.log();
    assert_eq!(
        log.matches("connections open (--max-connections)").count(),
        1,
        "one line per episode:\n{log}"
    );
}

#[test]
fn host_is_checked_and_the_absolute_form_authority_wins() {
    // RFC 9112 §3.2 and §3.2.2.
    let server = Server::start();
    let rows: &[(&str, u16)] = &[
        ("GET /sub/env.cgi HTTP/1.1\r\n", 400),
        ("GET /sub/env.cgi HTTP/1.1\r\nHost: a\r\nHost: a\r\n", 400),
        ("GET /sub/env.cgi HTTP/1.1\r\nHost: user@a\r\n", 400),
        ("GET /sub/env.cgi HTTP/1.0\r\n", 200),
        ("GET /sub/env.cgi HTTP/1.1\r\nHost: a.example:8080\r\n", 200),
        (
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n",
            501,
        ),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n", 200),
        ("GET * HTTP/1.1\r\nHost: a\r\n", 400),
    ];
    for (head, expected) in rows {
        let request = format!("{head}Connection: close\r\n\r\n");
        let got = exchange(server.port, request.as_bytes()).map(|(s, _)| s);
        assert_eq!(got, Some(*expected), "{head:?}");
    }
    let (status, text) = exchange(
        server.port,
        b"GET http://t.example:81/sub/env.cgi HTTP/1.1\r\nHost: other.example\r\n\
          Connection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("SERVER_NAME=t.example\n"), "{text}");
    assert!(text.contains("HTTP_HOST=t.example:81\n"), "{text}");
    assert!(text.contains("SCRIPT_NAME=/sub/env.cgi\n"), "{text}");
    server.log_line(&["GET /sub/env.cgi 400", "no Host header"]);
}

#[test]
fn request_heads_too_large_to_pass_are_431_before_any_script() {
    let server = Server::start();
    let head_with = |extra: &str| {
        format!("GET /sub/env.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
    };
    // Large but passable: reaches the script whole.
    let big = "v".repeat(60 * 1024);
    let (status, text) = exchange(
        server.port,
        head_with(&format!("X-Big: {big}\r\n")).as_bytes(),
    )
    .expect("a response");
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!("X_BIG_LENGTH={}\n", big.len())),
        "{text}"
    );
    // One header of 140 KB (over Linux's 128 KiB for one environment string), 70 KB, or
    // 101 header lines: 431, never a script that cannot start.
    let many: String = (0..101).map(|i| format!("X-N{i}: {i}\r\n")).collect();
    for extra in [
        format!("X-Big: {}\r\n", "v".repeat(140 * 1024)),
        format!("X-Big: {}\r\n", "v".repeat(70 * 1024)),
        many,
    ] {
        let got = exchange(server.port, head_with(&extra).as_bytes()).map(|(s, _)| s);
        assert_eq!(got, Some(431), "{} bytes of headers", extra.len());
    }
    assert!(
        !server.log().contains("could not start"),
        "{}",
        server.log()
    );
    assert_eq!(raw_status(server.port, "/page.cgi"), 200);
}

#[test]
fn only_final_statuses_leave_the_server() {
    // RFC 9110 §15: a final status is 200..=599; hyper would send 999 as it is.
    let server = Server::start();
    server.dir.write(
        "root/odd.cgi",
        "#!/bin/sh\nprintf 'Status: 999 Odd\\nContent-Type: text/plain\\n\\nodd\\n'\n",
        true,
    );
    assert_eq!(raw_status(server.port, "/odd.cgi"), 502);
    assert_eq!(raw_status(server.port, "/page.cgi"), 200);
}

#[test]
fn a_connection_cap_past_the_descriptor_limit_is_lowered_at_start_up() {
    let dir = TempDir::new("serve-nofile");
    dir.write(
        "root/hello.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n",
        true,
    );
    let log = dir.join("serve.log");
    let port = free_port();
    // A hard limit of 4096 descriptors cannot hold 100 000 connections.
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -n 4096 && exec \"$0\" serve --root \"$1\" --listen \"$2\" --max-connections 100000")
        .arg(bin())
        .arg(dir.join("root"))
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _process = Spawned::new(child);
    assert!(wait_for_port(
        ([127, 0, 0, 1], port).into(),
        Duration::from_secs(10)
    ));
    assert_eq!(raw_status(port, "/hello.cgi"), 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the descriptor limit (4096) allows")
            && text.contains("not --max-connections 100000"),
        "{text}"
    );
}
