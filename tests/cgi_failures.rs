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
    let mut child = std::process::Command::new(common::bin())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_FILENAME", &s)
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
