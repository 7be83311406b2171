//! Where connections come from: `--listen unix:PATH`, `--listen HOST:PORT`, or the listening
//! socket inherited as fd 0 (FCGI_LISTENSOCK_FILENO: spawn-fcgi, mod_fcgid, systemd with
//! `StandardInput=socket`), and the accept loop that never dies and never spins.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::net::AddressFamily;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};

use super::connection;
use super::privileges::Privileges;
use super::{Service, Stop};
use crate::front_end::log;

/// Mode of a unix socket we create: the web server's group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// FCGI_LISTENSOCK_FILENO (FastCGI 1.0 §2.2).
const LISTENSOCK_FILENO: RawFd = 0;
/// First pause after an accept error that will repeat (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause: short enough to pick up again quickly once descriptors free up.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A repeated complaint is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix; `path` is removed when the listener is dropped (when we created it).
    Unix {
        /// The socket.
        listener: UnixListener,
        /// The socket file we created.
        path: Option<PlacedSocket>,
    },
}

impl Listener {
    /// Binds `unix:PATH` (mode 0660, owned as `privileges` say, a stale socket replaced) or
    /// `HOST:PORT`.
    pub fn bind(spec: &str, privileges: &Privileges) -> anyhow::Result<Listener> {
        if let Some(path) = spec.strip_prefix("unix:") {
            return bind_unix(Path::new(path), privileges);
        }
        let std = std::net::TcpListener::bind(spec).with_context(|| format!("--listen {spec}"))?;
        std.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(std)?))
    }

    /// The listening socket inherited as fd 0, unix or TCP (told apart by getsockname).
    pub fn inherited() -> anyhow::Result<Listener> {
        let stdin = std::io::stdin();
        let family = rustix::net::getsockname(&stdin)
            .map(|addr| addr.address_family())
            .context(
                "no --listen given and fd 0 is not a socket \
                 (start with --listen unix:PATH or HOST:PORT, or under socket activation)",
            )?;
        if !rustix::net::sockopt::socket_acceptconn(&stdin).unwrap_or(false) {
            bail!("no --listen given and fd 0 is a socket that is not listening");
        }
        // SAFETY: fd 0 is an open listening socket (checked above) that nothing else in this
        // process uses: scripts get their own stdin, never ours.
        let fd = unsafe { OwnedFd::from_raw_fd(LISTENSOCK_FILENO) };
        match family {
            AddressFamily::UNIX => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true)?;
                Ok(Listener::Unix {
                    listener: UnixListener::from_std(std)?,
                    path: None,
                })
            }
            AddressFamily::INET | AddressFamily::INET6 => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(std)?))
            }
            other => bail!("fd 0 is a socket of unsupported family {}", other.as_raw()),
        }
    }

    /// `unix:PATH` or the address, for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp".into(), |a| a.to_string()),
            Listener::Unix {
                path: Some(placed), ..
            } => format!("unix:{}", placed.path.display()),
            Listener::Unix { listener, .. } => match listener.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix socket".into(),
                },
                Err(_) => "unix socket".into(),
            },
        }
    }

    async fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                // Records are written whole; don't let Nagle hold the last one back.
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp(stream))
            }
            Listener::Unix { listener, .. } => Ok(Conn::Unix(listener.accept().await?.0)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix {
            path: Some(placed), ..
        } = self
        {
            // Only remove the file if it is still ours (a new instance may have replaced it).
            let still_ours = std::fs::symlink_metadata(&placed.path)
                .is_ok_and(|meta| std::os::unix::fs::MetadataExt::ino(&meta) == placed.inode);
            if still_ours {
                let _ = std::fs::remove_file(&placed.path);
            }
        }
    }
}

/// A socket file we created, identified by its inode.
#[derive(Debug)]
pub struct PlacedSocket {
    /// Where it is.
    pub path: PathBuf,
    /// Its inode when placed (a socket descriptor's own inode lives in sockfs, not here).
    pub inode: u64,
}

/// An accepted connection.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Binds a unix socket under a temporary name, sets its mode and owner, then renames it into
/// place: a client never sees it with the wrong mode, and a stale socket is replaced atomically.
fn bind_unix(path: &Path, privileges: &Privileges) -> anyhow::Result<Listener> {
    // Said plainly: binding would otherwise fail with a bare ENOENT on the temporary name.
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !folder.is_dir() {
        bail!(
            "--listen unix:{}: the folder {} does not exist (create it first; under systemd, \
             RuntimeDirectory= does)",
            path.display(),
            folder.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("{} is in use by a running server", path.display());
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(_) => {}
    }
    let name = path
        .file_name()
        .with_context(|| format!("--listen unix:{}: no file name", path.display()))?;
    let mut temp_name = name.to_os_string();
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let _ = std::fs::remove_file(&temp);
    let std = std::os::unix::net::UnixListener::bind(&temp)
        .with_context(|| format!("binding {}", temp.display()))?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(anyhow::Error::from)
        .and_then(|()| privileges.place_socket(&temp))
        .and_then(|()| std::fs::rename(&temp, path).map_err(anyhow::Error::from));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("placing the socket at {}", path.display()));
    }
    let inode = std::fs::symlink_metadata(path)
        .map(|meta| std::os::unix::fs::MetadataExt::ino(&meta))
        .with_context(|| format!("placing the socket at {}", path.display()))?;
    std.set_nonblocking(true)?;
    Ok(Listener::Unix {
        listener: UnixListener::from_std(std)?,
        path: Some(PlacedSocket {
            path: path.to_path_buf(),
            inode,
        }),
    })
}

/// Accepts until `stop` leaves [`Stop::Running`]. Errors never end the loop: per-connection ones are
/// skipped, resource ones (EMFILE and kin, which repeat while the connection waits in the
/// backlog) pause with a growing back-off so the process neither dies nor spins.
pub(crate) async fn accept_loop(
    listener: &Listener,
    service: &Arc<Service>,
    permits: &Arc<Semaphore>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut backoff = Duration::ZERO;
    let mut full_log = RateLimitedLog::default();
    let mut error_log = RateLimitedLog::default();
    loop {
        let accepted = tokio::select! {
            () = connection::stopped(&mut stop) => return,
            accepted = listener.accept() => accepted,
        };
        let conn = match accepted {
            Ok(conn) => {
                backoff = Duration::ZERO;
                conn
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                error_log.log(format_args!("accept failed: {e}; pausing {backoff:?}"));
                tokio::select! {
                    () = connection::stopped(&mut stop) => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
            full_log.log(format_args!(
                "{} connections open, the limit: closing a new one",
                service.limits.max_connections
            ));
            drop(conn);
            continue;
        };
        let service = Arc::clone(service);
        let stop = stop.clone();
        tokio::spawn(async move {
            match conn {
                Conn::Tcp(s) => connection::serve_connection(s, service, stop).await,
                Conn::Unix(s) => connection::serve_connection(s, service, stop).await,
            }
            drop(permit);
        });
    }
}

/// Errors about one connection that went away before we took it; the next accept is fine.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(rustix::io::Errno::PROTO.raw_os_error())
}

/// Logs a complaint at most once per [`LOG_EVERY`], counting the ones left out.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn log(&mut self, message: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        match std::mem::take(&mut self.suppressed) {
            0 => log(format_args!("{message}")),
            n => log(format_args!("{message} ({n} more since the last report)")),
        }
        self.last = Some(now);
    }
}
