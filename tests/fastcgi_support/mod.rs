//! Support for the FastCGI tests: the responder started as a child, a raw FastCGI client,
//! nginx started on a temp prefix with the shipped nginx-conf/ files, and a raw HTTP client.
#![allow(dead_code)]

pub mod client;
pub mod http;
pub mod nginx;
pub mod php_fpm;

pub use client::{Client, Reply};

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Spawned, TempDir};

/// How long any single wait in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `http-conditional fastcgi` on a unix socket in a temp folder, killed when dropped.
pub struct Responder {
    pub process: Spawned,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Responder {
    /// Starts the responder serving `root`, listening on `socket`, with extra flags.
    pub fn start(root: &Path, socket: &Path, extra: &[&str]) -> Responder {
        Responder::start_via(Command::new(common::bin()), root, socket, extra)
    }

    /// Starts the responder through `launcher` (e.g. `sh -c 'ulimit -n 48; exec "$0" "$@"'`
    /// with the binary as `$0`), so limits can be set on it.
    pub fn start_via(
        mut launcher: Command,
        root: &Path,
        socket: &Path,
        extra: &[&str],
    ) -> Responder {
        let log = socket.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("responder log");
        let child = launcher
            .arg("fastcgi")
            .arg("--root")
            .arg(root)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(extra)
            .args(if extra.contains(&"--user") {
                &[][..]
            } else {
                common::responder_user()
            })
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn responder");
        let responder = Responder {
            process: Spawned::new(child),
            socket: socket.to_path_buf(),
            log,
        };
        responder.wait_ready();
        responder
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "responder did not listen on {}: {}",
            self.socket.display(),
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn connect(&self) -> Client {
        Client::unix(&self.socket)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory of the responder, in KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmRSS:")
    }

    /// Number of threads of the responder.
    pub fn threads(&self) -> u64 {
        proc_status_field(self.pid(), "Threads:")
    }

    /// Whether the responder process is still alive (not exited, not a zombie).
    pub fn alive(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits for the responder to exit; its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("responder still running after {limit:?}");
    }

    /// CPU time (user + system) the responder has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

pub fn proc_status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The params nginx would send for `GET /NAME` under `root`.
pub fn cgi_params(root: &Path, name: &str) -> Vec<(String, String)> {
    vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REQUEST_METHOD".into(), "GET".into()),
        ("QUERY_STRING".into(), String::new()),
        ("SCRIPT_NAME".into(), format!("/{name}")),
        (
            "SCRIPT_FILENAME".into(),
            root.join(name).display().to_string(),
        ),
        ("DOCUMENT_ROOT".into(), root.display().to_string()),
        ("CONTENT_LENGTH".into(), String::new()),
    ]
}

pub fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// One simple request for `name` on a fresh connection; the reply.
pub fn get(responder: &Responder, root: &Path, name: &str, extra: &[(&str, &str)]) -> Reply {
    let mut pairs = cgi_params(root, name);
    pairs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let mut client = responder.connect();
    client
        .send_request(1, false, &as_refs(&pairs), b"")
        .expect("send request");
    client.read_reply(1)
}

/// Asserts the responder still answers a normal request.
pub fn assert_still_serving(responder: &Responder, root: &Path) {
    let reply = get(responder, root, "hello.cgi", &[]);
    assert!(
        reply.end.is_some(),
        "no END_REQUEST; log: {}",
        responder.log_text()
    );
    assert_eq!(
        reply.status(),
        200,
        "{}",
        String::from_utf8_lossy(&reply.stdout)
    );
    assert_eq!(reply.body(), b"hello\n");
}

/// Writes the scripts most tests use into `dir`.
pub fn write_scripts(dir: &TempDir) {
    dir.write(
        "hello.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n",
        true,
    );
    dir.write(
        "echo.cgi",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat\n",
        true,
    );
    dir.write(
        "count.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec wc -c\n",
        true,
    );
}

/// Waits until `check` holds, up to `limit`.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    check()
}

/// Processes (other than `ps` itself) whose command line contains `marker`.
pub fn leftovers(marker: &str) -> Vec<String> {
    common::processes_matching(marker)
}

/// A folder with the usual scripts and a responder serving it.
pub fn setup(label: &str, flags: &[&str]) -> (TempDir, Responder) {
    let dir = TempDir::new(label);
    write_scripts(&dir);
    let responder = Responder::start(&dir.path, &dir.join("hc.sock"), flags);
    (dir, responder)
}

/// A script that prints its head and some body, then waits on a background child whose
/// program path (a copy of sleep inside the temp folder) shows up in `ps`.
pub fn write_slow_script(dir: &TempDir) -> String {
    let sleeper = dir.join("sleeper");
    std::fs::copy("/bin/sleep", &sleeper).unwrap();
    dir.write(
        "slow.cgi",
        format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 300000 /dev/zero\n\
             {} 30 &\nwait\ntouch {}\n",
            sleeper.display(),
            dir.join("finished").display()
        ),
        true,
    );
    sleeper.display().to_string()
}

pub fn assert_no_leftovers(marker: &str) {
    assert!(
        eventually(Duration::from_secs(5), || leftovers(marker).is_empty()),
        "script processes left: {:?}",
        leftovers(marker)
    );
}
