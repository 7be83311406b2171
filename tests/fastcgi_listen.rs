//! Where the responder listens and how it stops: `--listen unix:PATH` (mode 0660, stale socket
//! replaced, removed on exit), `--listen HOST:PORT`, the socket inherited as fd 0 (socket
//! activation), SIGTERM draining requests in flight, and EMFILE neither killing nor spinning.

mod common;
mod fastcgi_support;

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spawned, TempDir};
use fastcgi_support::*;

/// Runs a request for hello.cgi on `client` and checks the answer.
fn hello_over(mut client: Client, root: &std::path::Path) {
    let params = cgi_params(root, "hello.cgi");
    client
        .send_request(1, false, &as_refs(&params), b"")
        .unwrap();
    let reply = client.read_reply(1);
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.body(), b"hello\n");
}

/// Starts the binary with `stdin` as its fd 0 and no --listen, as systemd or spawn-fcgi do.
fn start_on_fd0(root: &std::path::Path, stdin: OwnedFd, log: &std::path::Path) -> Spawned {
    let child = Command::new(common::bin())
        .arg("fastcgi")
        .args(common::responder_user())
        .arg("--root")
        .arg(root)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Spawned::new(child)
}

#[test]
fn unix_socket_is_0660_replaces_a_stale_one_and_is_removed_on_exit() {
    let dir = TempDir::new("fcgi-unix");
    write_scripts(&dir);
    let socket = dir.join("hc.sock");
    // A stale socket: bound, then its server went away without removing it.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(UnixStream::connect(&socket).is_err());
    let mut responder = Responder::start(&dir.path, &socket, &[]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_still_serving(&responder, &dir.path);

    // A live socket is not taken over, and a regular file is not replaced.
    let second = Command::new(common::bin())
        .arg("fastcgi")
        .args(common::responder_user())
        .arg("--root")
        .arg(&dir.path)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));
    let file = dir.write("not-a-socket", "data", false);
    let third = Command::new(common::bin())
        .arg("fastcgi")
        .args(common::responder_user())
        .arg("--root")
        .arg(&dir.path)
        .arg("--listen")
        .arg(format!("unix:{}", file.display()))
        .output()
        .unwrap();
    assert!(!third.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");

    assert_still_serving(&responder, &dir.path);
    responder.terminate();
    assert_eq!(responder.wait_exit(PATIENCE), Some(0));
    assert!(!socket.exists(), "socket file left behind");
}

#[test]
fn tcp_listen_and_bad_arguments() {
    let dir = TempDir::new("fcgi-tcp");
    write_scripts(&dir);
    let port = common::free_port();
    let log = dir.join("tcp.log");
    let child = Command::new(common::bin())
        .arg("fastcgi")
        .args(common::responder_user())
        .arg("--root")
        .arg(&dir.path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _responder = Spawned::new(child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(common::wait_for_port(addr, PATIENCE));
    hello_over(Client::tcp(addr), &dir.path);

    // No --listen and a plain stdin: a clear error, not a hang.
    let out = Command::new(common::bin())
        .arg("fastcgi")
        .args(common::responder_user())
        .arg("--root")
        .arg(&dir.path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fd 0"));
    // A missing root.
    let out = Command::new(common::bin())
        .arg("fastcgi")
        .args(common::responder_user())
        .args(["--root", "/nonexistent/root", "--listen"])
        .arg(format!("unix:{}", dir.join("x.sock").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--root"));
}

#[test]
fn socket_activation_through_fd0_tcp_and_unix() {
    let dir = TempDir::new("fcgi-fd0");
    write_scripts(&dir);
    // TCP, as `ListenStream=127.0.0.1:PORT` with `StandardInput=socket` hands it over.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let _tcp_responder = start_on_fd0(&dir.path, OwnedFd::from(tcp), &dir.join("tcp.log"));
    hello_over(Client::tcp(addr), &dir.path);
    hello_over(Client::tcp(addr), &dir.path);

    // Unix: the socket file belongs to whoever created it and is left in place on exit.
    let path = dir.join("activated.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let mut unix_responder = start_on_fd0(&dir.path, OwnedFd::from(unix), &dir.join("unix.log"));
    hello_over(Client::unix(&path), &dir.path);
    fastcgi_support::signal(unix_responder.pid(), "TERM");
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if let Ok(Some(status)) = unix_responder.child.try_wait() {
            assert!(status.success());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        path.exists(),
        "an inherited socket's file is not ours to remove"
    );
}

#[test]
fn sigterm_stops_accepting_and_finishes_requests_in_flight() {
    let dir = TempDir::new("fcgi-term");
    write_scripts(&dir);
    dir.write(
        "slow.cgi",
        format!(
            "#!/bin/sh\ntouch {}\nsleep 1\nprintf 'Content-Type: text/plain\\n\\ndone\\n'\n",
            dir.join("started").display()
        ),
        true,
    );
    let socket = dir.join("hc.sock");
    let mut responder = Responder::start(&dir.path, &socket, &[]);
    // An idle kept-alive connection, and a request in flight.
    let mut idle = responder.connect();
    let params = cgi_params(&dir.path, "hello.cgi");
    idle.send_request(1, true, &as_refs(&params), b"").unwrap();
    assert_eq!(idle.read_reply(1).body(), b"hello\n");
    let mut busy = responder.connect();
    let slow = cgi_params(&dir.path, "slow.cgi");
    busy.send_request(1, true, &as_refs(&slow), b"").unwrap();
    assert!(eventually(PATIENCE, || dir.join("started").exists()));

    responder.terminate();
    // Stops accepting at once: the socket file goes, new connections are refused.
    assert!(eventually(Duration::from_secs(2), || !socket.exists()));
    assert!(UnixStream::connect(&socket).is_err());
    // The idle connection is closed; the request in flight is answered in full.
    assert!(idle.closed_within(Duration::from_secs(2)));
    let reply = busy.read_reply(1);
    assert_eq!(reply.end, Some((0, 0)));
    assert_eq!(reply.body(), b"done\n");
    assert!(busy.closed_within(Duration::from_secs(2)));
    assert_eq!(responder.wait_exit(PATIENCE), Some(0));
}

#[test]
fn running_out_of_file_descriptors_neither_kills_nor_spins() {
    let dir = TempDir::new("fcgi-emfile");
    write_scripts(&dir);
    let mut launcher = Command::new("sh");
    launcher
        .arg("-c")
        .arg("ulimit -n 40 && exec \"$0\" \"$@\"")
        .arg(common::bin());
    let mut responder = Responder::start_via(launcher, &dir.path, &dir.join("hc.sock"), &[]);
    // More connections than descriptors: the rest wait in the backlog while accept fails.
    let hogs: Vec<UnixStream> = (0..60)
        .map(|_| UnixStream::connect(&responder.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let ticks = responder.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let spent = responder.cpu_ticks() - ticks;
    // Clock ticks are 1/100 s: a spinning accept loop would use ~100 per second.
    assert!(spent < 20, "{spent} ticks of CPU in one second at EMFILE");
    assert!(responder.alive());
    drop(hogs);
    assert!(
        eventually(PATIENCE, || {
            let reply = get(&responder, &dir.path, "hello.cgi", &[]);
            reply.end.is_some() && reply.body() == b"hello\n"
        }),
        "not serving again after descriptors freed: {}",
        responder.log_text()
    );
    let log = responder.log_text();
    assert!(log.contains("accept failed"), "{log}");
    assert!(log.lines().count() < 20, "log flooded: {log}");
}

#[test]
fn a_second_sigterm_kills_the_scripts_still_running() {
    let dir = TempDir::new("fcgi-term2");
    write_scripts(&dir);
    let sleeper = write_slow_script(&dir);
    let mut responder = Responder::start(&dir.path, &dir.join("hc.sock"), &[]);
    let mut busy = responder.connect();
    let slow = cgi_params(&dir.path, "slow.cgi");
    busy.send_request(1, true, &as_refs(&slow), b"").unwrap();
    assert!(eventually(PATIENCE, || !leftovers(&sleeper).is_empty()));
    responder.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert!(responder.alive(), "the first SIGTERM waits for the request");
    responder.terminate();
    let start = Instant::now();
    assert_eq!(responder.wait_exit(PATIENCE), Some(0));
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_no_leftovers(&sleeper);
    assert!(!dir.join("finished").exists());
}

#[test]
fn rules_the_user_account_cannot_read_are_refused_at_start() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to switch to another user");
        return;
    }
    let dir = TempDir::new("fcgi-rules-user");
    write_scripts(&dir);
    let rules = dir.write("private.toml", "[[rule]]\nmatch = \"*.cgi\"\n", false);
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The folders must be reachable by nobody for the start to get as far as the rules.
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("hc.sock");
    let out = Command::new(common::bin())
        .arg("fastcgi")
        .arg("--root")
        .arg(&dir.path)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(["--user", "nobody", "--rules"])
        .arg(&rules)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readable by the --user account"),
        "{stderr}"
    );
}
