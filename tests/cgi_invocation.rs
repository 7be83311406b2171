//! How CGI mode finds and starts the script: arguments, SCRIPT_FILENAME / PATH_TRANSLATED,
//! interpreters, shebang lines, search words (RFC 3875 §4.4) and timeout precedence.

mod common;

use common::{Cgi, TempDir, bin};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Executes a script file directly, as a web server does for a shebang script: the kernel
/// starts whatever its `#!` line names.
fn exec_as_server(
    script: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    // A script just written may still be open in a child another test thread forked meanwhile
    // (ETXTBSY until that child execs): try again, as a moment later it is not.
    for _ in 0..50 {
        let output = std::process::Command::new(script)
            .env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "GET")
            .env("SCRIPT_FILENAME", script)
            .envs(env.iter().copied())
            .args(args)
            .output();
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed busy", script.display())
}

fn page(dir: &TempDir, name: &str, executable: bool) -> std::path::PathBuf {
    dir.write(
        name,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"page $0 args=$#\"\n",
        executable,
    )
}

#[test]
fn last_argument_wins_over_script_filename() {
    let dir = TempDir::new("inv");
    let a = page(&dir, "a.cgi", true);
    let b = page(&dir, "b.cgi", true);
    let r = Cgi::new(&a).arg(&b).run();
    assert!(r.text().contains("b.cgi"), "{}", r.text());
}

#[test]
fn action_handler_uses_path_translated_when_script_filename_names_the_wrapper() {
    let dir = TempDir::new("inv");
    let p = page(&dir, "page.cgi", true);
    let r = Cgi::new(&bin()).env("PATH_TRANSLATED", &p).run();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("page.cgi"));
}

#[test]
fn interpreter_argument_runs_a_non_executable_script() {
    let dir = TempDir::new("inv");
    let p = page(&dir, "page.sh", false);
    let r = Cgi::new(&p).arg("/bin/sh").arg(&p).run();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("page.sh"));
}

#[test]
fn interpreter_from_sidecar_and_from_environment() {
    let dir = TempDir::new("inv");
    let p = page(&dir, "page.sh", false);
    let r = Cgi::new(&p).env("CONDITIONAL_INTERPRETER", "/bin/sh").run();
    assert_eq!(r.status, 200);
    dir.sidecar("page.sh", r#"{"interpreter": "/bin/sh"}"#);
    let r = Cgi::new(&p).run();
    assert_eq!(r.status, 200);
    // The sidecar's interpreter comes before the environment's.
    let r = Cgi::new(&p)
        .env("CONDITIONAL_INTERPRETER", "/nonexistent/php")
        .run();
    assert_eq!(r.status, 200);
}

#[test]
fn shebang_naming_the_wrapper_and_an_interpreter_runs_through_the_kernel() {
    let dir = TempDir::new("inv");
    let script = dir.write(
        "shebang.cgi",
        format!(
            "#!{} /bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho via-shebang\n",
            bin().display()
        ),
        true,
    );
    dir.sidecar("shebang.cgi", "{}");
    let out = exec_as_server(&script, &[("QUERY_STRING", "/bin/false")], &["/bin/false"]);
    let (status, headers, body) = common::parse_cgi_output(&out.stdout);
    assert_eq!(status, 200);
    assert_eq!(body, b"via-shebang\n");
    assert!(headers.iter().any(|(n, _)| n == "ETag"));
}

#[test]
fn shebang_naming_only_the_wrapper_is_refused_not_looped() {
    let dir = TempDir::new("inv");
    let script = dir.write(
        "loop.cgi",
        format!(
            "#!{}\nprintf 'Content-Type: text/plain\\n\\nnever'\n",
            bin().display()
        ),
        true,
    );
    let start = Instant::now();
    let out = exec_as_server(&script, &[], &[]);
    let (status, _, body) = common::parse_cgi_output(&out.stdout);
    assert_eq!(status, 500);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("shebang") && text.contains("interpreter"),
        "{text}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn interpreter_naming_the_wrapper_is_refused() {
    let dir = TempDir::new("inv");
    let p = page(&dir, "page.sh", false);
    let r = Cgi::new(&p).env("CONDITIONAL_INTERPRETER", bin()).run();
    assert_eq!(r.status, 500);
}

#[test]
fn search_words_never_choose_what_runs() {
    let dir = TempDir::new("inv");
    let p = page(&dir, "page.cgi", true);
    // Apache appends the words of `?/bin/sh` after the script (shebang runs).
    let r = Cgi::new(&p)
        .env("QUERY_STRING", "/bin/sh")
        .arg(&p)
        .arg("/bin/sh")
        .run();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("page.cgi args=0"), "{}", r.text());
    // Under Action the words are the only arguments.
    let r = Cgi::new(&bin())
        .env("PATH_TRANSLATED", &p)
        .env("QUERY_STRING", "%2Fbin%2Fsh")
        .arg("/bin/sh")
        .run();
    assert!(r.text().contains("page.cgi"), "{}", r.text());
    // Flags and subcommands smuggled as words are dropped too.
    for word in ["--help", "serve", "--timeout"] {
        let r = Cgi::new(&bin())
            .env("PATH_TRANSLATED", &p)
            .env("QUERY_STRING", word)
            .arg(word)
            .run();
        assert_eq!(r.status, 200, "?{word}");
        assert!(r.text().contains("page.cgi"), "?{word}");
    }
    let r = Cgi::new(&p)
        .env("QUERY_STRING", "print")
        .arg(&p)
        .arg("print")
        .run();
    assert!(r.text().contains("page.cgi"));
}

#[test]
fn timeout_precedence_sidecar_then_flag_then_environment() {
    let dir = TempDir::new("inv");
    let s = dir.write(
        "slow.cgi",
        "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\n\\nslow'\n",
        true,
    );
    let run = |cgi: Cgi| {
        let start = Instant::now();
        let r = cgi.run();
        (r.status, start.elapsed())
    };
    let (status, took) = run(Cgi::new(&s).env("CONDITIONAL_TIMEOUT", "1"));
    assert_eq!(status, 504);
    assert!(took < Duration::from_secs(3));
    let (status, _) = run(Cgi::new(&s)
        .env("CONDITIONAL_TIMEOUT", "1")
        .arg("--timeout")
        .arg("10")
        .arg(&s));
    assert_eq!(status, 200, "--timeout comes before CONDITIONAL_TIMEOUT");
    dir.sidecar("slow.cgi", r#"{"timeout": 1}"#);
    let (status, _) = run(Cgi::new(&s).arg("--timeout").arg("10").arg(&s));
    assert_eq!(status, 504, "the sidecar's timeout comes first");
}

#[test]
fn the_script_runs_in_its_own_folder() {
    let dir = TempDir::new("inv");
    let s = dir.write(
        "cwd.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\npwd\n",
        true,
    );
    let r = Cgi::new(&s).run();
    assert_eq!(r.text().trim(), dir.path.display().to_string());
    let _ = std::fs::metadata(&s).unwrap().permissions().mode();
}

#[test]
fn a_shebang_reaching_the_wrapper_through_env_is_refused_not_looped() {
    let dir = TempDir::new("inv");
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let script = dir.write(
        "envloop.cgi",
        "#!/usr/bin/env http-conditional\nprintf 'Content-Type: text/plain\\n\\nnever'\n",
        true,
    );
    let start = Instant::now();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let out = exec_as_server(&script, &[("PATH", &path)], &[]);
    let (status, _, body) = common::parse_cgi_output(&out.stdout);
    // The outer wrapper runs the script, which comes back to a wrapper that refuses it; the
    // outer one then relays that refusal's output as a malformed-or-failed script.
    assert!(status == 500 || status == 502, "status {status}");
    assert!(!String::from_utf8_lossy(&body).contains("never"));
    assert!(start.elapsed() < Duration::from_secs(5));
    let depth = String::from_utf8_lossy(&out.stderr)
        .matches("shebang")
        .count();
    assert!(
        depth >= 1,
        "the refusal is logged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_invalid_timeout_flag_is_a_clear_500() {
    let dir = TempDir::new("inv");
    let p = page(&dir, "page.cgi", true);
    for bad in ["-3", "0", "soon"] {
        let r = Cgi::new(&p).arg("--timeout").arg(bad).arg(&p).run();
        assert_eq!(r.status, 500, "--timeout {bad}");
        assert!(r.text().contains("bad command line"));
    }
}
