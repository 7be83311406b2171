//! Real Apache httpd for the integration tests: a generated ServerRoot in a temp dir that
//! includes the shipped `apache-conf/` snippets with only their paths replaced, started as a
//! foreground child on a free 127.0.0.1 port and stopped by PID when dropped; plus a small
//! HTTP/1.1 client that sees exactly what Apache sends (no decompression, strict framing).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, TempDir};

/// Where Debian keeps Apache's loadable modules.
const MODULES: &str = "/usr/lib/apache2/modules";
/// Time Apache gets to start answering.
const START_LIMIT: Duration = Duration::from_secs(15);
/// Time Apache gets to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(8);
/// Longest a single test request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// The folders the shipped snippets use, and the folder (under the temp ServerRoot) each one
/// becomes in the tests.
const FOLDERS: [(&str, &str); 6] = [
    ("/usr/lib/http-conditional", "lib"),
    ("/var/www/legacy", "legacy"),
    ("/var/www/php", "php"),
    ("/var/www/cgi-legacy", "cgi-legacy"),
    ("/var/www/scripts", "scripts"),
    ("/var/www/fcgi", "fcgi"),
];
/// The FastCGI responder's socket in `fastcgi.conf`, and where it is in the tests.
const SOCKET: (&str, &str) = (
    "/run/http-conditional.sock",
    "fcgi-run/http-conditional.sock",
);

/// php-fpm's socket in `php-fpm.conf`, and where the tests' php-fpm listens.
pub const PHP_FPM_SOCKET: (&str, &str) = ("/run/php/php8.2-fpm.sock", "fcgi-run/php-fpm.sock");

/// The multi-processing module and the CGI module that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mpm {
    /// Threaded event MPM with mod_cgid (Debian's default).
    EventCgid,
    /// prefork with the classic mod_cgi.
    PreforkCgi,
}

/// A running Apache; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Apache {
    pub dir: TempDir,
    pub port: u16,
    /// The wrapper as the snippets expect it (the handler, and the shebang interpreter).
    pub wrapper: PathBuf,
    child: Option<Child>,
}

impl Apache {
    /// Starts Apache with the given snippets from `apache-conf/` and extra configuration
    /// (`{root}` in `extra` stands for the ServerRoot). `None` when apache2 is missing outside CI.
    pub fn start(label: &str, mpm: Mpm, snippets: &[&str], extra: &str) -> Option<Apache> {
        let apache2 = common::require("apache2")?;
        let dir = TempDir::new(&format!("apache-{label}"));
        let root = dir.path.clone();
        for sub in ["conf", "run", "logs", "htdocs"]
            .iter()
            .chain(FOLDERS.iter().map(|(_, to)| to))
        {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // Scripts run as the server's user: give them folders they may write to.
        for shared in ["state", "sessions", "fcgi-run"] {
            make_shared_dir(&root.join(shared));
        }
        let wrapper = root.join("lib").join("http-conditional");
        std::fs::copy(common::bin(), &wrapper).expect("copy the wrapper");

        let mut includes = String::new();
        for name in snippets {
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("apache-conf")
                .join(name);
            let text = std::fs::read_to_string(&shipped)
                .unwrap_or_else(|e| panic!("read {}: {e}", shipped.display()));
            let local = root.join("conf").join(name);
            std::fs::write(&local, substitute_paths(&text, &root)).unwrap();
            includes.push_str(&format!("Include \"{}\"\n", local.display()));
        }
        let port = common::free_port();
        let conf = main_config(
            &root,
            port,
            mpm,
            &includes,
            &extra.replace("{root}", &root_str(&root)),
        );
        let conf_path = root.join("conf").join("httpd.conf");
        std::fs::write(&conf_path, conf).unwrap();

        let log = |name: &str| std::fs::File::create(root.join("logs").join(name)).unwrap();
        let child = Command::new(apache2)
            .arg("-d")
            .arg(&root)
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            // Its own process group: on shutdown Apache signals its whole group, which
            // would otherwise include the test harness.
            .process_group(0)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .expect("spawn apache2");
        let mut apache = Apache {
            dir,
            port,
            wrapper,
            child: Some(child),
        };
        apache.wait_until_ready();
        Some(apache)
    }

    fn wait_until_ready(&mut self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "apache2 exited at start ({status}):\n{}\n{}",
                    self.read_log("stderr.log"),
                    self.error_log()
                );
            }
            if common::wait_for_port(addr, Duration::from_millis(100)) {
                return;
            }
        }
        panic!(
            "apache2 did not listen within {START_LIMIT:?}:\n{}",
            self.error_log()
        );
    }

    /// The ServerRoot.
    pub fn root(&self) -> &Path {
        &self.dir.path
    }

    /// A path under the ServerRoot.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes a file under the ServerRoot (executable when asked).
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>, executable: bool) -> PathBuf {
        self.dir.write(rel, content, executable)
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(name)).unwrap_or_default()
    }

    /// Apache's error log so far.
    pub fn error_log(&self) -> String {
        self.read_log("error.log")
    }

    /// Waits (briefly) until the error log contains `needle`.
    pub fn error_log_gets(&self, needle: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if self.error_log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends a request and reads the whole response.
    pub fn send(&self, request: &Req) -> Resp {
        request.send(self.port)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send(&Req::new("GET", path))
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SIGTERM lets the parent stop its children and the cgid daemon.
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

fn root_str(root: &Path) -> String {
    root.display().to_string()
}

/// The shipped snippet with its deployment paths pointed into the temp ServerRoot.
fn substitute_paths(text: &str, root: &Path) -> String {
    let mut out = text.to_string();
    for (from, to) in FOLDERS.into_iter().chain([SOCKET, PHP_FPM_SOCKET]) {
        out = out.replace(from, &root_str(&root.join(to)));
    }
    out
}

fn make_shared_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// The user Apache's children switch to when it starts as root.
pub fn server_user() -> Option<(String, String)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let has = |db: &str, name: &str| db.lines().any(|l| l.split(':').next() == Some(name));
    [
        ("www-data", "www-data"),
        ("nobody", "nogroup"),
        ("nobody", "nobody"),
    ]
    .into_iter()
    .find(|(u, g)| has(&passwd, u) && has(&group, g))
    .map(|(u, g)| (u.to_string(), g.to_string()))
}

fn main_config(root: &Path, port: u16, mpm: Mpm, includes: &str, extra: &str) -> String {
    let r = root_str(root);
    let (mpm_module, cgi_module) = match mpm {
        Mpm::EventCgid => (("mpm_event", "mod_mpm_event"), ("cgid", "mod_cgid")),
        Mpm::PreforkCgi => (("mpm_prefork", "mod_mpm_prefork"), ("cgi", "mod_cgi")),
    };
    let mut modules = vec![mpm_module, cgi_module];
    modules.extend([
        ("authz_core", "mod_authz_core"),
        ("authz_host", "mod_authz_host"),
        ("mime", "mod_mime"),
        ("alias", "mod_alias"),
        ("actions", "mod_actions"),
        ("env", "mod_env"),
        ("setenvif", "mod_setenvif"),
        ("filter", "mod_filter"),
        ("deflate", "mod_deflate"),
        ("headers", "mod_headers"),
        ("dir", "mod_dir"),
        ("proxy", "mod_proxy"),
        ("proxy_fcgi", "mod_proxy_fcgi"),
    ]);
    let mut conf = String::new();
    conf.push_str(&format!(
        "ServerRoot \"{r}\"\n\
         PidFile \"{r}/run/httpd.pid\"\n\
         DefaultRuntimeDir \"{r}/run\"\n\
         Mutex file:{r}/run default\n\
         ErrorLog \"{r}/logs/error.log\"\n\
         LogLevel warn\n\
         Listen 127.0.0.1:{port}\n\
         ServerName 127.0.0.1\n\
         Timeout 20\n"
    ));
    if let Some((user, group)) = server_user() {
        conf.push_str(&format!("User {user}\nGroup {group}\n"));
    }
    for (name, file) in modules {
        conf.push_str(&format!("LoadModule {name}_module {MODULES}/{file}.so\n"));
    }
    if mpm == Mpm::EventCgid {
        conf.push_str(&format!("ScriptSock \"{r}/run/cgid.sock\"\n"));
    } else {
        conf.push_str("StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\n");
    }
    conf.push_str(&format!(
        "TypesConfig /etc/mime.types\n\
         DocumentRoot \"{r}/htdocs\"\n\
         <Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n\
         LogFormat \"%h \\\"%r\\\" %>s %b\" common\n\
         CustomLog \"{r}/logs/access.log\" common\n\
         # As Debian's deflate.conf does by default.\n\
         AddOutputFilterByType DEFLATE text/html text/plain\n"
    ));
    conf.push_str(includes);
    conf.push_str(extra);
    conf.push('\n');
    conf
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Self {
        Req {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request on a fresh connection and reads the response to its end.
    pub fn send(&self, port: u16) -> Resp {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(REQUEST_LIMIT)).unwrap();
        stream.set_write_timeout(Some(REQUEST_LIMIT)).unwrap();
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        // A test may name its own Host (two servers answering as one site).
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Host"))
        {
            head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
        }
        head.push_str("Connection: close\r\n");
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        // Write the body on another thread: the server may answer before reading it all.
        let mut writer = stream.try_clone().unwrap();
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        let feeder = std::thread::spawn(move || writer.write_all(&bytes));
        let mut raw = Vec::new();
        let started = Instant::now();
        if let Err(e) = stream.read_to_end(&mut raw) {
            panic!(
                "{} {}: reading the response failed after {:?}: {e} (got {} bytes)",
                self.method,
                self.path,
                started.elapsed(),
                raw.len()
            );
        }
        let _ = feeder.join();
        Resp::parse(&raw, self.method == "HEAD").unwrap_or_else(|e| {
            panic!(
                "{} {}: {e}: {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&raw)
            )
        })
    }
}

/// A response as it arrived (body de-chunked, never decompressed).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    fn parse(raw: &[u8], head_request: bool) -> Result<Resp, String> {
        let mut rest = raw;
        loop {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or("no complete header block")?;
            let head = String::from_utf8_lossy(&rest[..end]).into_owned();
            let body = &rest[end + 4..];
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("bad status line")?;
            if status == 100 {
                rest = body;
                continue;
            }
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            let mut resp = Resp {
                status,
                headers,
                body: Vec::new(),
            };
            if head_request || status == 304 || status == 204 {
                if !body.is_empty() {
                    return Err(format!("{} bytes after a bodiless response", body.len()));
                }
                return Ok(resp);
            }
            resp.body = if resp
                .header("Transfer-Encoding")
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
            {
                dechunk(body)?
            } else if let Some(len) = resp.header("Content-Length") {
                let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
                if body.len() != len {
                    return Err(format!(
                        "truncated: Content-Length {len}, got {}",
                        body.len()
                    ));
                }
                body.to_vec()
            } else {
                body.to_vec()
            };
            return Ok(resp);
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn etag(&self) -> String {
        self.header("ETag")
            .unwrap_or_else(|| panic!("no ETag in {:?}", self.headers))
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body, gunzipped when Content-Encoding says gzip.
    pub fn decoded(&self) -> Vec<u8> {
        match self.header("Content-Encoding") {
            Some(c) if c.eq_ignore_ascii_case("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .expect("valid gzip body");
                out
            }
            None => self.body.clone(),
            Some(other) => panic!("unexpected Content-Encoding {other}"),
        }
    }
}

/// Decodes a chunked body; a missing last chunk means Apache cut the response short.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body (no last chunk)")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// How the FastCGI responder gets its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `--listen unix:PATH`: the responder creates the socket.
    Path,
    /// The listening socket handed over as fd 0, as systemd (`StandardInput=socket`) does.
    Inherited,
}

/// `http-conditional fastcgi` serving the `fcgi` folder on the socket `fastcgi.conf` names,
/// as the server's user; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Responder {
    child: Option<Child>,
    log: PathBuf,
}

impl Responder {
    pub fn start(apache: &Apache, listen: Listen) -> Responder {
        let socket = apache.path(SOCKET.1);
        let log = apache.path("logs/responder.log");
        let mut cmd = Command::new(&apache.wrapper);
        cmd.arg("fastcgi")
            .arg("--root")
            .arg(apache.path("fcgi"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0);
        let ids = server_user()
            .map(|(user, group)| (id_of("/etc/passwd", &user), id_of("/etc/group", &group)));
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
        match listen {
            Listen::Path => {
                cmd.arg("--listen")
                    .arg(format!("unix:{}", socket.display()))
                    .stdin(Stdio::null());
            }
            Listen::Inherited => {
                use std::os::unix::fs::PermissionsExt;
                let listener =
                    std::os::unix::net::UnixListener::bind(&socket).expect("bind socket");
                std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
                if let Some((uid, gid)) = ids {
                    std::os::unix::fs::chown(&socket, Some(uid), Some(gid)).unwrap();
                }
                cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)));
            }
        }
        let child = cmd.spawn().expect("spawn the FastCGI responder");
        let mut responder = Responder {
            child: Some(child),
            log,
        };
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return responder;
            }
            if let Some(Ok(Some(status))) = responder.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the responder exited at start ({status}): {}",
                    responder.log_text()
                );
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "the responder did not listen on {}: {}",
                socket.display(),
                responder.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The responder's own stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (briefly) until the responder's log contains `needle`.
    pub fn log_gets(&self, needle: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL to whatever is left of the process group it leads.
fn stop(mut child: Child) {
    let pid = child.id() as i32;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < STOP_LIMIT {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The numeric id of a user (`/etc/passwd`) or group (`/etc/group`).
pub fn id_of(db: &str, name: &str) -> u32 {
    std::fs::read_to_string(db)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2).and_then(|id| id.parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in {db}"))
}
