//! `serve` driven through real HTTP clients (ureq, curl and raw sockets) on 127.0.0.1.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
        let dir = TempDir::new("serve");
        let root = dir.path.join("root");
        write_fixtures(&dir);
        let log = dir.path.join("serve.log");
        let port = free_port();
        let child = Command::new(bin())
            .args(["serve", "--root"])
            .arg(&root)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start serve");
        let process = Spawned::new(child);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_for_port(addr, Duration::from_secs(10)),
            "serve did not listen"
        );
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
        "root/sub/env.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         for v in SCRIPT_NAME PATH_INFO QUERY_STRING REQUEST_METHOD HTTP_X_TEST SERVER_PORT; do\n\
         eval \"echo $v=\\$$v\"; done\n\
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
    let _ = stream.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 200"), "the head was sent");
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
