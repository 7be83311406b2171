//! Support for the FastCGI tests: the responder started as a child, a raw FastCGI client,
//! nginx started on a temp prefix with the shipped nginx-conf/ files, and a raw HTTP client.
#![allow(dead_code)]

pub mod http;
pub mod nginx;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http_conditional::fastcgi::codec::{
    BEGIN_REQUEST, END_REQUEST, PARAMS, RESPONDER, STDERR, STDIN, STDOUT, decode_server_records,
    encode_client_record, encode_pairs, parse_end_request,
};

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

/// A raw FastCGI client over a unix or TCP stream.
pub struct Client {
    pub stream: Box<dyn Stream>,
    pub buf: BytesMut,
}

pub trait Stream: Read + Write + Send {
    fn shutdown_write(&self);
    fn set_timeout(&self, limit: Duration);
}

impl Stream for UnixStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn set_timeout(&self, limit: Duration) {
        let _ = self.set_read_timeout(Some(limit));
        let _ = self.set_write_timeout(Some(limit));
    }
}

impl Stream for TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn set_timeout(&self, limit: Duration) {
        let _ = self.set_read_timeout(Some(limit));
        let _ = self.set_write_timeout(Some(limit));
    }
}

/// What a request got back.
#[derive(Debug, Default)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// (appStatus, protocolStatus) of END_REQUEST.
    pub end: Option<(u32, u8)>,
    /// STDOUT records received, with their lengths (for "no empty record before the end").
    pub stdout_records: Vec<usize>,
}

impl Reply {
    pub fn status(&self) -> u16 {
        common::parse_cgi_output(&self.stdout).0
    }

    pub fn parsed(&self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        common::parse_cgi_output(&self.stdout)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed()
            .1
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn body(&self) -> Vec<u8> {
        self.parsed().2
    }
}

impl Client {
    pub fn unix(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to the responder");
        stream.set_timeout(PATIENCE);
        Client {
            stream: Box::new(stream),
            buf: BytesMut::new(),
        }
    }

    pub fn tcp(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the responder");
        stream.set_timeout(PATIENCE);
        Client {
            stream: Box::new(stream),
            buf: BytesMut::new(),
        }
    }

    /// Sends raw bytes; errors (the responder closed) are returned, not fatal.
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one stream's content as records (split at 65535; empty = end of stream).
    pub fn record(&mut self, record_type: u8, id: u16, content: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode_client_record(record_type, id, content, &mut out);
        self.raw(&out)
    }

    pub fn begin(&mut self, id: u16, keep_conn: bool) -> std::io::Result<()> {
        self.begin_role(id, RESPONDER, keep_conn)
    }

    pub fn begin_role(&mut self, id: u16, role: u16, keep_conn: bool) -> std::io::Result<()> {
        let [a, b] = role.to_be_bytes();
        self.record(
            BEGIN_REQUEST,
            id,
            &[a, b, u8::from(keep_conn), 0, 0, 0, 0, 0],
        )
    }

    /// Sends the params as one stream (and its end).
    pub fn params<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        id: u16,
        pairs: &[(N, V)],
    ) -> std::io::Result<()> {
        let mut enc = BytesMut::new();
        encode_pairs(pairs, &mut enc);
        self.record(PARAMS, id, &enc)?;
        self.record(PARAMS, id, b"")
    }

    /// A whole request: BEGIN, params, stdin (and its end).
    pub fn send_request(
        &mut self,
        id: u16,
        keep_conn: bool,
        pairs: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<()> {
        self.begin(id, keep_conn)?;
        self.params(id, pairs)?;
        if !body.is_empty() {
            self.record(STDIN, id, body)?;
        }
        self.record(STDIN, id, b"")
    }

    /// Reads records until END_REQUEST for `id` (or EOF / timeout, leaving `end` None).
    pub fn read_reply(&mut self, id: u16) -> Reply {
        let mut reply = Reply::default();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let records = decode_server_records(&mut self.buf).expect("well-formed records");
            for (t, rid, content) in records {
                assert_eq!(rid, id, "record for another request id: type {t}");
                match t {
                    STDOUT => {
                        reply.stdout_records.push(content.len());
                        reply.stdout.extend_from_slice(&content);
                    }
                    STDERR => reply.stderr.extend_from_slice(&content),
                    END_REQUEST => {
                        reply.end = parse_end_request(&content);
                        return reply;
                    }
                    other => panic!("unexpected record type {other}"),
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return reply,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads any records (type, id, content) until `count` arrived or EOF / timeout.
    pub fn read_records(&mut self, count: usize) -> Vec<(u8, u16, Vec<u8>)> {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            for (t, id, c) in decode_server_records(&mut self.buf).expect("well-formed records") {
                got.push((t, id, c.to_vec()));
            }
            if got.len() >= count {
                return got;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True when the responder closed the connection (EOF) within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_timeout(limit);
        let mut chunk = [0u8; 4096];
        let start = Instant::now();
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) if start.elapsed() < limit => continue,
                Ok(_) => return false,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }
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
