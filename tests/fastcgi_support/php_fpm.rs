//! Debian's php-fpm started by a test: `php-fpm8.2 -F -R -y CONF` with a temporary pool on a
//! unix socket and an access log, in its own process group, killed whole when dropped.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Spawned};

use super::PATIENCE;

/// The php-fpm binary Debian 12 ships.
const PHP_FPM: &str = "php-fpm8.2";

/// How the pool is set up.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    /// `pm.max_children` (static).
    pub children: usize,
    /// `pm.max_requests` (0: never recycle).
    pub max_requests: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            children: 4,
            max_requests: 0,
        }
    }
}

/// A running php-fpm master and its workers.
pub struct PhpFpm {
    process: Option<Spawned>,
    binary: PathBuf,
    dir: PathBuf,
    pub socket: PathBuf,
    conf: PathBuf,
}

impl PhpFpm {
    /// Starts php-fpm with its files in `dir`; `None` (a skip) when it is not installed, a
    /// panic under CI=true.
    pub fn start(dir: &Path, pool: Pool) -> Option<PhpFpm> {
        PhpFpm::start_at(dir, &dir.join("fpm.sock"), pool)
    }

    /// As [`PhpFpm::start`], listening on `socket`.
    pub fn start_at(dir: &Path, socket: &Path, pool: Pool) -> Option<PhpFpm> {
        let binary = common::require(PHP_FPM)?;
        std::fs::create_dir_all(dir).unwrap();
        let socket = socket.to_path_buf();
        let conf = dir.join("fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 pid = {dir}/fpm.pid\n\
                 error_log = {dir}/fpm-error.log\n\
                 daemonize = no\n\
                 [test]\n\
                 user = root\n\
                 group = root\n\
                 listen = {socket}\n\
                 listen.mode = 0666\n\
                 pm = static\n\
                 pm.max_children = {children}\n\
                 pm.max_requests = {max_requests}\n\
                 access.log = {dir}/fpm-access.log\n\
                 access.format = \"%m %r%Q%q %s\"\n\
                 catch_workers_output = yes\n\
                 php_admin_value[session.save_path] = {dir}/sessions\n\
                 php_admin_value[output_buffering] = 0\n",
                dir = dir.display(),
                socket = socket.display(),
                children = pool.children,
                max_requests = pool.max_requests,
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("sessions")).unwrap();
        let mut fpm = PhpFpm {
            process: None,
            binary,
            dir: dir.to_path_buf(),
            socket,
            conf,
        };
        fpm.restart();
        Some(fpm)
    }

    /// (Re)starts the master after [`PhpFpm::stop`], on the same socket.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(&self.binary)
            // -R: the tests run as root; -n: no php.ini, so the machine's settings stay out.
            .args(["-F", "-R", "-n", "-y"])
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("fpm-stderr.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("start php-fpm");
        self.process = Some(Spawned::new(child));
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("php-fpm did not listen: {}", self.error_log());
    }

    /// Kills the master and its workers at once (SIGKILL to the process group).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// The PIDs of the pool's worker processes.
    pub fn workers(&self) -> Vec<u32> {
        let Some(master) = &self.process else {
            return Vec::new();
        };
        let out = Command::new("ps")
            .args(["-o", "pid=", "--ppid"])
            .arg(master.pid().to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Requests php-fpm has logged as answered.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("fpm-access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until php-fpm has logged `n` requests (it writes the line after the response).
    pub fn wait_requests(&self, n: usize) -> Vec<String> {
        super::eventually(PATIENCE, || self.requests().len() >= n);
        self.requests()
    }

    pub fn error_log(&self) -> String {
        let mut log = std::fs::read_to_string(self.dir.join("fpm-error.log")).unwrap_or_default();
        log.push_str(&std::fs::read_to_string(self.dir.join("fpm-stderr.log")).unwrap_or_default());
        log
    }

    /// The folder PHP keeps its sessions in.
    pub fn sessions(&self) -> PathBuf {
        self.dir.join("sessions")
    }
}
