//! nginx started by a test: a temp prefix, the shipped nginx-conf/ files with only ports and
//! paths substituted, killed by PID when dropped.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{self, Spawned, TempDir};

use super::PATIENCE;

/// The shipped server block and params snippet.
pub fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("nginx-conf")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces `from` (which must occur) by `to`.
pub fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "nginx-conf no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// nginx as a child process (`daemon off`), stopped when dropped.
pub struct Nginx {
    _process: Spawned,
    pub addr: SocketAddr,
    pub prefix: PathBuf,
}

impl Nginx {
    /// Starts nginx serving `www` through the responder on `socket`; `None` (a skip) when
    /// nginx is not installed, a panic under CI=true.
    pub fn start(dir: &TempDir, www: &Path, socket: &Path) -> Option<Nginx> {
        Nginx::start_with(dir, www, socket, "http-conditional.conf", &[], "")
    }

    /// Starts nginx with the shipped server file `conf_name`, its ports and paths substituted,
    /// `more` substitutions (each `from` must occur) and `extra_http` added to the http block.
    pub fn start_with(
        dir: &TempDir,
        www: &Path,
        socket: &Path,
        conf_name: &str,
        more: &[(&str, String)],
        extra_http: &str,
    ) -> Option<Nginx> {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("snippets")).unwrap();
        let params = prefix.join("snippets/http-conditional-params.conf");
        std::fs::write(&params, shipped("http-conditional-params.conf")).unwrap();
        let mut server = shipped(conf_name);
        for (from, to) in more {
            server = substitute(&server, from, to);
        }
        server = substitute(
            &server,
            "root /srv/www;",
            &format!("root {};", www.display()),
        );
        server = substitute(
            &server,
            "/run/http-conditional/http-conditional.sock",
            &socket.display().to_string(),
        );
        server = substitute(
            &server,
            "/etc/nginx/snippets/http-conditional-params.conf",
            &params.display().to_string(),
        );
        Nginx::start_server(dir, &server, extra_http)
    }

    /// Starts nginx with `server` (a shipped file's text, its other paths already substituted)
    /// in the http block, its `listen 80;` put on a free 127.0.0.1 port.
    pub fn start_server(dir: &TempDir, server: &str, extra_http: &str) -> Option<Nginx> {
        let nginx = common::require("nginx")?;
        let prefix = dir.join("nginx");
        for sub in ["conf.d", "tmp"] {
            std::fs::create_dir_all(prefix.join(sub)).unwrap();
        }
        let port = common::free_port();
        let server = substitute(server, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(prefix.join("conf.d/http-conditional.conf"), server).unwrap();
        // The test's own top level: temp paths under the prefix, and (run as root here) a
        // worker user that can reach the responder's 0660 socket.
        let user = if is_root() { "user root;\n" } else { "" };
        let tmp = prefix.join("tmp");
        let top = format!(
            "{user}worker_processes 1;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               default_type application/octet-stream;\n\
               access_log {access};\n\
               client_body_temp_path {tmp}/body;\n\
               fastcgi_temp_path {tmp}/fastcgi;\n\
               proxy_temp_path {tmp}/proxy;\n\
               uwsgi_temp_path {tmp}/uwsgi;\n\
               scgi_temp_path {tmp}/scgi;\n\
               include {conf};\n\
               {extra_http}\n\
             }}\n",
            access = prefix.join("access.log").display(),
            tmp = tmp.display(),
            conf = prefix.join("conf.d/http-conditional.conf").display(),
        );
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, top).unwrap();
        let globals = format!(
            "daemon off; pid {}; error_log {} info;",
            prefix.join("nginx.pid").display(),
            prefix.join("error.log").display()
        );
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg(globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log")).unwrap())
            // Its own process group, so dropping it takes the workers down with the master.
            .process_group(0)
            .spawn()
            .expect("start nginx");
        let process = Spawned::new(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if !common::wait_for_port(addr, PATIENCE) {
            let log = std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
            panic!("nginx did not start: {log}");
        }
        Some(Nginx {
            _process: process,
            addr,
            prefix,
        })
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
