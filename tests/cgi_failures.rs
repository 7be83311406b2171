//! The contract's failure table through the built binary: a clear status, a short body, never a
//! partial body, never a hang; and the runner's hard cases (deadlock, background children).

mod common;

use common::{Cgi, TempDir, processes_matching};
use std::time::{Duration, Instant};

#[test]
fn missing_script_is_404() {
    let dir = TempDir::new("fail");
    let r = Cgi::new(&dir.join("nope.cgi")).run();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nope.cgi"));
}

#[test]
fn not_executable_without_interpreter_is_403() {
    let dir = TempDir::new("fail");
    let s = dir.write("plain.cgi", "#!/bin/sh\necho hi\n", false);
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not executable"), "{}", r.text());
}

#[test]
fn non_zero_exit_is_502_with_short_body_and_stderr_in_the_log() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "bad.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\npartial page'\necho 'database is down' >&2\nexit 3\n",
        true,
    );
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 502);
    assert!(
        !r.text().contains("partial page"),
        "no partial body after an error"
    );
    assert!(r.text().contains("bad.cgi failed"));
    assert!(
        r.stderr.contains("database is down"),
        "stderr: {}",
        r.stderr
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
}

#[test]
fn malformed_or_empty_head_is_502() {
    let dir = TempDir::new("fail");
    for (name, body) in [
        ("nohead.cgi", "echo '<html>no headers</html>'"),
        ("empty.cgi", "exit 0"),
        ("badname.cgi", "printf 'Bad Header: x\\n\\nbody'"),
        ("badstatus.cgi", "printf 'Status: abc\\n\\nbody'"),
        ("unfinished.cgi", "printf 'Content-Type: text/plain\\n'"),
    ] {
        let s = dir.write(name, format!("#!/bin/sh\n{body}\n"), true);
        let r = Cgi::new(&s).run();
        assert_eq!(r.status, 502, "{name}: {}", r.text());
        assert!(
            r.text().contains("malformed") || r.text().contains("failed"),
            "{name}"
        );
    }
}

#[test]
fn timeout_is_504_and_kills_the_whole_process_group() {
    let dir = TempDir::new("fail");
    let marker = dir.join("grandchild-survived");
    let s = dir.write(
        "slow.cgi",
        format!(
            "#!/bin/sh\n(sleep 2; touch '{}') &\nsleep 30\n",
            marker.display()
        ),
        true,
    );
    dir.sidecar("slow.cgi", r#"{"timeout": 1}"#);
    let start = Instant::now();
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 504);
    assert!(start.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !marker.exists(),
        "the script's background child outlived the timeout"
    );
    assert!(processes_matching(&s.display().to_string()).is_empty());
}

#[test]
fn timeout_after_the_head_before_the_buffer_fills_is_still_504() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "stall.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nstarted'\nsleep 30\n",
        true,
    );
    let r = Cgi::new(&s).env("CONDITIONAL_TIMEOUT", "1").run();
    assert_eq!(r.status, 504);
    assert!(!r.text().contains("started"));
}

#[test]
fn bad_sidecar_is_500_naming_the_file_and_the_json_error() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "a.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nx'\n",
        true,
    );
    for json in [
        "{not json",
        r#"{"cache_seconds": "soon"}"#,
        r#"{"unknown_field": 1}"#,
    ] {
        dir.sidecar("a.cgi", json);
        let r = Cgi::new(&s).run();
        assert_eq!(r.status, 500, "{json}");
        let text = r.text();
        assert!(text.contains("a.cgi.conditional.json"), "{text}");
        assert!(
            !text.contains(&dir.path.display().to_string()),
            "full path leaked: {text}"
        );
        assert!(text.contains("line 1"), "the JSON error is named: {text}");
    }
}

#[test]
fn httpoxy_proxy_header_never_reaches_the_script_and_redirect_status_is_added() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "env.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"proxy=${HTTP_PROXY:-unset} redirect=$REDIRECT_STATUS host=$HTTP_HOST\"\n",
        true,
    );
    let r = Cgi::new(&s)
        .header("PROXY", "http://evil:8080")
        .header("HOST", "example.org")
        .run();
    assert_eq!(r.text(), "proxy=unset redirect=200 host=example.org\n");
    let r = Cgi::new(&s).env("REDIRECT_STATUS", "404").run();
    assert!(r.text().contains("redirect=404"));
}

#[test]
fn large_output_before_reading_the_body_does_not_deadlock() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "echo.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 300000 /dev/zero | tr '\\0' x\nwc -c\n",
        true,
    );
    let body = vec![b'y'; 2 << 20];
    let r = Cgi::new(&s).method("POST").body(body).run();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 300_000 + "2097152\n".len());
    assert!(r.text().ends_with("2097152\n"));
    assert!(r.body_consumed);
}

#[test]
fn a_background_child_holding_stdout_does_not_hold_the_response() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "bg.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ndone'\nsleep 20 &\nexit 0\n",
        true,
    );
    let start = Instant::now();
    let r = Cgi::new(&s).run();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 20"])
        .status();
}

#[test]
fn failing_probe_is_502_and_the_page_is_not_run() {
    let dir = TempDir::new("fail");
    let runs = dir.join("runs.log");
    let s = dir.write(
        "p.cgi",
        format!(
            "#!/bin/sh\nif [ \"$CONDITIONAL_PROBE\" = 1 ]; then echo 'not a time'; exit 0; fi\necho run >> '{}'\nprintf 'Content-Type: text/plain\\n\\nx'\n",
            runs.display()
        ),
        true,
    );
    dir.sidecar("p.cgi", r#"{"probe": true}"#);
    let r = Cgi::new(&s).run();
    assert_eq!(r.status, 502);
    assert!(!runs.exists());
}

#[test]
fn a_script_that_dies_before_any_output_is_reported_by_its_exit_status_with_its_stderr() {
    let dir = TempDir::new("fail");
    let s = dir.write(
        "die.cgi",
        "#!/bin/sh\necho 'no database' >&2\nexit 7\n",
        true,
    );
    for _ in 0..20 {
        let r = Cgi::new(&s).run();
        assert_eq!(r.status, 502);
        assert!(
            r.stderr.contains("die.cgi: no database"),
            "stderr lost: {:?}",
            r.stderr
        );
        assert!(r.stderr.contains("exit status: 7"), "{}", r.stderr);
    }
}

/// `command` with the environment a server gives a CGI program for a GET of `script`.
fn as_started_by_server(
    mut command: std::process::Command,
    script: &std::path::Path,
) -> std::process::Command {
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_FILENAME", script);
    command
}

#[test]
fn the_script_dies_with_the_wrapper_when_the_server_gives_up() {
    let dir = TempDir::new("fail");
    let marker = dir.join("still-running");
    let s = dir.write(
        "long.cgi",
        format!(
            "#!/bin/sh\nsleep 2\ntouch '{}'\nsleep 30\n",
            marker.display()
        ),
        true,
    );
    let mut child = as_started_by_server(std::process::Command::new(common::bin()), &s)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!marker.exists(), "the script outlived the wrapper");
}

/// The wrapper started by `sh` with its standard descriptors redirected as `redirections`
/// says (`<&-` closes stdin), as a server may start it; its output and exit status.
fn run_from_shell(script: &std::path::Path, redirections: &str) -> std::process::Output {
    let mut shell = std::process::Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(format!("exec \"$0\" {redirections}"))
        .arg(common::bin());
    let mut child = as_started_by_server(shell, script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    common::wait_with_timeout(child, Duration::from_secs(60))
}

#[test]
fn a_closed_stdin_reaches_the_script_as_an_empty_body_not_a_bad_descriptor() {
    // The wrapper's start-up reopens a closed standard descriptor on /dev/null (as std's does),
    // so no file it opens later can take its number.
    let dir = TempDir::new("fail");
    let s = dir.write(
        "read.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncat\necho \"cat=$?\"\n",
        true,
    );
    let out = run_from_shell(&s, "<&-");
    let (status, _, body) = common::parse_cgi_output(&out.stdout);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&body), "cat=0\n");
}

#[test]
fn a_server_closing_the_output_pipe_early_gets_an_exit_status_not_a_sigpipe_death() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("fail");
    // Far more than the pipe and the wrapper's buffer hold, so the wrapper writes after the
    // reader is gone.
    let s = dir.write(
        "big.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec head -c 8000000 /dev/zero\n",
        true,
    );
    let mut child = as_started_by_server(std::process::Command::new(common::bin()), &s)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = common::wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(
        out.status.signal(),
        None,
        "the wrapper died of a signal ({:?}) instead of seeing EPIPE",
        out.status
    );
}

/// A page and its sidecar path; the sidecar is left for the test to plant.
fn page_with_planted_sidecar(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let s = dir.write(
        "page.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\npage'\n",
        true,
    );
    (s, dir.join("page.cgi.conditional.json"))
}

fn assert_500_naming_the_sidecar(r: &common::Response, what: &str) {
    assert_eq!(r.status, 500, "{what}: {}", r.text());
    assert!(
        r.text().contains("page.cgi.conditional.json"),
        "{what}: {}",
        r.text()
    );
    assert!(!r.text().contains("page\n"), "{what}: the page ran");
}

#[test]
fn a_fifo_sidecar_is_500_naming_it_and_never_waits_for_a_writer() {
    let dir = TempDir::new("fifo-sidecar");
    let (s, sidecar) = page_with_planted_sidecar(&dir);
    common::mkfifo(&sidecar);
    // The harness fails the test if the wrapper hangs: no writer ever opens the FIFO.
    let r = Cgi::new(&s).timeout(Duration::from_secs(20)).run();
    assert_500_naming_the_sidecar(&r, "FIFO");
    assert!(r.text().contains("FIFO"), "{}", r.text());
}

#[test]
fn a_sidecar_linked_to_dev_zero_is_500_not_read_to_exhaustion() {
    let dir = TempDir::new("zero-sidecar");
    let (s, sidecar) = page_with_planted_sidecar(&dir);
    std::os::unix::fs::symlink("/dev/zero", &sidecar).unwrap();
    let r = Cgi::new(&s).timeout(Duration::from_secs(20)).run();
    assert_500_naming_the_sidecar(&r, "/dev/zero");
    assert!(r.text().contains("character device"), "{}", r.text());
}

#[test]
fn a_sidecar_larger_than_one_mebibyte_is_500() {
    let dir = TempDir::new("big-sidecar");
    let (s, sidecar) = page_with_planted_sidecar(&dir);
    let mut json = b"{\"cache_seconds\": 0".to_vec();
    json.resize(2 << 20, b' ');
    json.push(b'}');
    std::fs::write(&sidecar, json).unwrap();
    let r = Cgi::new(&s).run();
    assert_500_naming_the_sidecar(&r, "2 MiB");
    assert!(r.text().contains("larger than"), "{}", r.text());
}

#[test]
fn a_session_file_that_is_a_fifo_or_a_device_counts_as_absent() {
    let dir = TempDir::new("session-planted");
    let sessions = dir.join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let s = dir.write(
        "session.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nwelcome'\n",
        true,
    );
    dir.sidecar(
        "session.cgi",
        &format!(
            r#"{{"session": {{"cookie": "PHPSESSID", "save_path": "{}"}}, "last_modified": 1000000000, "feed": true}}"#,
            sessions.display()
        ),
    );
    let get = || {
        Cgi::new(&s)
            .header("COOKIE", "PHPSESSID=planted")
            .timeout(Duration::from_secs(20))
            .run()
    };
    let absent = get();
    assert_eq!((absent.status, absent.text().as_str()), (200, "welcome"));
    let etag = absent.header("ETag").expect("an ETag").to_string();
    let planted = sessions.join("sess_planted");
    common::mkfifo(&planted);
    let fifo = get();
    assert_eq!((fifo.status, fifo.text().as_str()), (200, "welcome"));
    assert_eq!(
        fifo.header("ETag"),
        Some(etag.as_str()),
        "FIFO = no session"
    );
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &planted).unwrap();
    let zero = get();
    assert_eq!((zero.status, zero.text().as_str()), (200, "welcome"));
    assert_eq!(
        zero.header("ETag"),
        Some(etag.as_str()),
        "/dev/zero = no session"
    );
    // A real session file still counts.
    std::fs::remove_file(&planted).unwrap();
    std::fs::write(&planted, "visits|i:1;").unwrap();
    assert_ne!(get().header("ETag"), Some(etag.as_str()));
}

#[test]
fn one_40_mb_stderr_line_is_relayed_in_pieces_and_the_page_still_answers() {
    let dir = TempDir::new("long-stderr");
    let s = dir.write(
        "chatty.cgi",
        "#!/bin/sh\nhead -c 40000000 /dev/zero | tr '\\0' x >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n",
        true,
    );
    let r = Cgi::new(&s)
        .env("CONDITIONAL_TIMEOUT", "20")
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "{}",
        &r.stderr[..200.min(r.stderr.len())]
    );
    let pieces: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("chatty.cgi: "))
        .collect();
    assert!(pieces.len() > 1000, "{} pieces", pieces.len());
    assert!(
        pieces.iter().all(|l| l.len() < 9 * 1024),
        "a piece longer than the bound"
    );
    assert!(
        pieces[1..]
            .iter()
            .all(|l| l.starts_with("chatty.cgi: [continued] "))
    );
    let relayed: usize = pieces
        .iter()
        .map(|l| {
            l.trim_start_matches("chatty.cgi: ")
                .trim_start_matches("[continued] ")
                .len()
        })
        .sum();
    assert_eq!(relayed, 40_000_000, "every byte relayed once");
}

#[test]
fn a_script_whose_name_holds_a_newline_or_escape_cannot_forge_a_log_line() {
    let dir = TempDir::new("forged-name");
    let name = "x.cgi\nhttp-conditional: forged\x1b[2K";
    let s = dir.write(
        name,
        "#!/bin/sh\nprintf 'said\\r\\033[1Aover\\nsecond\\n' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n",
        true,
    );
    let r = Cgi::new(&s).run();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let prefix = "x.cgi\\x0ahttp-conditional: forged\\x1b[2K: ";
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{prefix}said\\x0d\\x1b[1Aover"),
            format!("{prefix}second"),
        ],
        "{:?}",
        r.stderr
    );
    assert!(!r.stderr.contains('\x1b') && !r.stderr.contains('\r'));
}

/// A FastCGI application that answers every request with `stdout` (as FCGI_STDOUT records,
/// when given), then FCGI_END_REQUEST carrying `app_status` and `protocol_status`.
fn fake_upstream_ending(
    dir: &TempDir,
    app_status: u32,
    protocol_status: u8,
    stdout: Vec<u8>,
) -> String {
    use std::io::{Read, Write};
    let socket = dir.join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            // Read until the empty FCGI_STDIN record (type 5, length 0) arrives.
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen
                .windows(8)
                .any(|w| w[1] == 5 && w[4] == 0 && w[5] == 0 && w[0] == 1)
            {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let mut out = Vec::new();
            if !stdout.is_empty() {
                for chunk in stdout.chunks(65535) {
                    let len = u16::try_from(chunk.len()).unwrap().to_be_bytes();
                    out.extend_from_slice(&[1, 6, 0, 1, len[0], len[1], 0, 0]);
                    out.extend_from_slice(chunk);
                }
                out.extend_from_slice(&[1, 6, 0, 1, 0, 0, 0, 0]);
            }
            let [a, b, c, d] = app_status.to_be_bytes();
            out.extend_from_slice(&[1, 3, 0, 1, 0, 8, 0, 0, a, b, c, d, protocol_status, 0, 0, 0]);
            let _ = stream.write_all(&out);
        }
    });
    format!("unix:{}", socket.display())
}

/// As [`fake_upstream_ending`] with application status 0.
fn fake_upstream(dir: &TempDir, protocol_status: u8, stdout: &[u8]) -> String {
    fake_upstream_ending(dir, 0, protocol_status, stdout.to_vec())
}

#[test]
fn an_overloaded_upstream_is_503_and_a_malformed_one_502() {
    let dir = TempDir::new("upstream-refused");
    let page = dir.write("page.php", "<?php echo 1;", false);
    dir.sidecar("page.php", "{}");
    // FCGI_OVERLOADED (2) and FCGI_CANT_MPX_CONN (1): the application refused the request.
    for status in [2u8, 1] {
        let app = TempDir::new("upstream-refused");
        let upstream = fake_upstream(&app, status, b"");
        let r = Cgi::new(&page).env("CONDITIONAL_UPSTREAM", upstream).run();
        assert_eq!(r.status, 503, "protocol status {status}: {}", r.text());
    }
    // A complete request whose output is no CGI response: 502.
    let upstream = fake_upstream(&dir, 0, b"no headers here");
    let r = Cgi::new(&page).env("CONDITIONAL_UPSTREAM", upstream).run();
    assert_eq!(r.status, 502, "{}", r.text());
    // An upstream address that is neither unix:/path nor HOST:PORT: 500.
    let r = Cgi::new(&page).env("CONDITIONAL_UPSTREAM", "nowhere").run();
    assert_eq!(r.status, 500, "{}", r.text());
}

#[test]
fn an_overloaded_upstream_refusing_the_probe_is_503_too() {
    let dir = TempDir::new("upstream-probe");
    let page = dir.write("page.php", "<?php echo 1;", false);
    dir.sidecar("page.php", r#"{"probe": true}"#);
    let upstream = fake_upstream(&dir, 2, b"");
    let r = Cgi::new(&page).env("CONDITIONAL_UPSTREAM", upstream).run();
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn a_streamed_body_of_its_announced_length_from_a_failed_run_never_looks_complete() {
    let dir = TempDir::new("upstream-failed-run");
    let page = dir.write("page.php", "<?php echo 1;", false);
    let length = 400_000;
    let mut stdout =
        format!("Content-Type: text/plain\r\nContent-Length: {length}\r\n\r\n").into_bytes();
    stdout.extend(std::iter::repeat_n(b'x', length));
    // The whole announced body arrives, then the application says it failed.
    let upstream = fake_upstream_ending(&dir, 1, 0, stdout);
    let r = Cgi::new(&page).env("CONDITIONAL_UPSTREAM", upstream).run();
    assert_eq!(r.status, 200, "the head went out before the failure");
    assert_eq!(r.header("Content-Length"), Some("400000"));
    assert!(
        r.body.len() < length,
        "{} bytes: a complete-looking body",
        r.body.len()
    );
    assert!(!r.exit_ok, "the wrapper reports the failure to the server");
}

#[test]
fn an_upstream_whose_listen_queue_stays_full_is_503_within_the_timeout() {
    let dir = TempDir::new("upstream-backlog");
    let socket = dir.join("full.sock");
    // A listener with the smallest queue, never accepting, its queue filled by idle clients.
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(0)\n\
             cs = []\n\
             for _ in range(8):\n\
             \x20   c = socket.socket(socket.AF_UNIX); c.setblocking(False)\n\
             \x20   try: c.connect(sys.argv[1])\n\
             \x20   except OSError: break\n\
             \x20   cs.append(c)\n\
             print('ready', flush=True); time.sleep(60)\n",
        )
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let page = dir.write("page.php", "<?php echo 1;", false);
    let r = Cgi::new(&page)
        .env("CONDITIONAL_UPSTREAM", format!("unix:{}", socket.display()))
        .env("CONDITIONAL_TIMEOUT", "2")
        .timeout(std::time::Duration::from_secs(15))
        .run();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.status, 503, "{}", r.text());
}
