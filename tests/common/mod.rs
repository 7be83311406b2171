//! Shared test support: temp folders, the built binary run as a CGI program, free ports,
//! server processes killed by PID, and required external programs.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_http-conditional"))
}

/// A folder removed when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("hc-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        // Real path, so comparisons with canonicalized paths hold.
        let path = std::fs::canonicalize(&path).expect("canonicalize temp dir");
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file (creating folders), executable when asked.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>, executable: bool) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Writes `name.conditional.json`.
    pub fn sidecar(&self, script_name: &str, json: &str) -> PathBuf {
        self.write(&format!("{script_name}.conditional.json"), json, false)
    }

    /// Copies the bundled examples folder here and returns its path.
    pub fn examples(&self) -> PathBuf {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let to = self.path.join("examples");
        copy_dir(&from, &to);
        to
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Sets a file's mtime (`touch -d @SECONDS`).
pub fn set_mtime(path: &Path, unix_seconds: u64) {
    let status = Command::new("touch")
        .arg("-d")
        .arg(format!("@{unix_seconds}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A parsed CGI response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
    pub exit_ok: bool,
    /// The whole request body was taken by the wrapper (or its script).
    pub body_consumed: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses `Status: ...`, headers, blank line, body.
pub fn parse_cgi_output(out: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        })
        .unwrap_or_else(|| panic!("no header block in {:?}", String::from_utf8_lossy(out)));
    let head = String::from_utf8_lossy(&out[..end.0]).into_owned();
    let mut status = 0;
    let mut headers = Vec::new();
    for line in head.lines() {
        let (name, value) = line.split_once(':').expect("header line");
        if name.eq_ignore_ascii_case("Status") {
            status = value.trim()[..3].parse().expect("status code");
        } else {
            headers.push((name.to_string(), value.trim().to_string()));
        }
    }
    assert!(status != 0, "no explicit Status line in {head:?}");
    (status, headers, out[end.1..].to_vec())
}

/// The binary run once as a CGI program with a mocked environment.
pub struct Cgi {
    program: PathBuf,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    stdin: Vec<u8>,
    timeout: Duration,
}

impl Cgi {
    /// A GET for `script` (as SCRIPT_FILENAME).
    pub fn new(script: &Path) -> Self {
        let mut cgi = Cgi {
            program: bin(),
            env: Vec::new(),
            args: Vec::new(),
            stdin: Vec::new(),
            timeout: Duration::from_secs(60),
        };
        cgi = cgi
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", "")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("SCRIPT_FILENAME", script.as_os_str());
        cgi
    }

    /// No SCRIPT_FILENAME at all (argument-only runs).
    pub fn bare() -> Self {
        Cgi::new(Path::new("")).unset("SCRIPT_FILENAME")
    }

    /// Runs another build of the wrapper (the one extracted from the Debian package).
    pub fn program(mut self, path: &Path) -> Self {
        self.program = path.to_path_buf();
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let name = name.into();
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.into()));
        self
    }

    pub fn unset(mut self, name: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self
    }

    pub fn header(self, cgi_name: &str, value: impl Into<OsString>) -> Self {
        self.env(format!("HTTP_{cgi_name}"), value)
    }

    pub fn method(self, method: &str) -> Self {
        self.env("REQUEST_METHOD", method)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.stdin = body.into();
        let len = self.stdin.len().to_string();
        self.env("CONTENT_LENGTH", len)
    }

    /// Overrides the hang limit.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    pub fn run(self) -> Response {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn http-conditional");
        let mut stdin = child.stdin.take().unwrap();
        let body = self.stdin.clone();
        let feeder = std::thread::spawn(move || stdin.write_all(&body).is_ok());
        let output = wait_with_timeout(child, self.timeout);
        let body_consumed = feeder.join().unwrap();
        let (status, headers, body) = parse_cgi_output(&output.stdout);
        Response {
            status,
            headers,
            body,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            exit_ok: output.status.success(),
            body_consumed,
        }
    }
}

/// Waits for a child, killing it (and failing the test) after `limit`.
pub fn wait_with_timeout(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done_seen = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done_seen.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe_kill(pid);
        true
    });
    let output = child.wait_with_output().expect("wait");
    done.store(true, Ordering::SeqCst);
    assert!(!watchdog.join().unwrap(), "process hung past {limit:?}");
    output
}

fn unsafe_kill(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Finds an external program; under `CI=true` a missing one fails the test, elsewhere the
/// test is reported as skipped (returns `None`).
pub fn require(program: &str) -> Option<PathBuf> {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let found = dirs
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{program} is required under CI=true but is not installed");
        }
        eprintln!("SKIPPED: {program} is not installed");
    }
    found
}

/// A background process killed by PID when dropped.
pub struct Spawned {
    pub child: Child,
}

impl Spawned {
    pub fn new(child: Child) -> Self {
        Spawned { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // A server started in its own process group (nginx's master and workers) goes down
        // whole: killing only the master by PID would orphan its workers.
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(0);
        // SAFETY: getpgid and kill take plain integers.
        if pid > 1 && unsafe { libc::getpgid(pid) } == pid {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http-conditional serve --root ROOT` on a free 127.0.0.1 port with `flags`, an empty
/// environment but `path_var` as PATH, stderr to `log`; waits until it listens. Its port and
/// the process (killed by PID when dropped).
pub fn start_serve(root: &Path, log: &Path, flags: &[&str], path_var: &str) -> (Spawned, u16) {
    let port = free_port();
    let child = Command::new(bin())
        .args(["serve", "--root"])
        .arg(root)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(flags)
        .env_clear()
        .env("PATH", path_var)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start serve");
    let process = Spawned::new(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_for_port(addr, Duration::from_secs(10)),
        "serve did not listen: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (process, port)
}

/// Makes a FIFO at `path`: what a hostile local user plants where the wrapper reads a file.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .expect("mkfifo");
}

/// Processes whose command line contains `needle` (for leftover-script checks).
pub fn processes_matching(needle: &str) -> Vec<String> {
    let out = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .map(str::to_string)
        .collect()
}

/// `--user root` when the tests run as root, nothing otherwise: the FastCGI responder refuses
/// to start as root without `--user`, and most tests run scripts as whoever runs the tests
/// (tests/apps.rs checks the switch to another user).
pub fn responder_user() -> &'static [&'static str] {
    if rustix::process::geteuid().is_root() {
        &["--user", "root"]
    } else {
        &[]
    }
}
