//! Runs a script as a child process: its own process group, stdin fed concurrently, stdout read
//! with a deadline, and the end of the response detected when the script exits even if a
//! background child keeps the pipe open.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::backend::{AbortHandle, ErrorOutput, Input, RunError, StderrSink};
use rustix::process::{Pid, PidfdFlags, Signal};

/// How often a poll wakes to re-check the child when the kernel has no pidfd (before Linux 5.3).
const FALLBACK_TICK: Duration = Duration::from_millis(20);
/// How often the stdin feeder re-checks whether the run has ended while the script is not reading.
const FEEDER_TICK: Duration = Duration::from_millis(100);

/// What to run. Borrowed: the backend's program and the request's environment are handed to
/// the spawn as they are, not copied for it.
#[derive(Debug, Clone, Copy)]
pub struct ScriptCommand<'a> {
    /// The program: the interpreter, or the script itself.
    pub program: &'a Path,
    /// Arguments after the program.
    pub args: &'a [OsString],
    /// The complete environment.
    pub env: &'a [(OsString, OsString)],
    /// Working directory: the script's folder (RFC 3875 §7.2 suggests it; php-cgi expects it).
    pub cwd: &'a Path,
    /// Time allowed from spawn to exit.
    pub timeout: Duration,
}

/// A started script.
pub struct RunningScript {
    child: Child,
    process_group: i32,
    stdout: ChildStdout,
    stderr: Option<(ChildStderr, StderrSink)>,
    pidfd: Option<OwnedFd>,
    deadline: Instant,
    exit: Option<ExitStatus>,
    stdout_done: bool,
    feeder_stop: Option<Arc<AtomicBool>>,
    abort: AbortHandle,
    /// Released when the run ends (a `--max-children` slot).
    held: Option<Box<dyn Send>>,
}

impl RunningScript {
    /// Starts the script in its own process group.
    pub fn spawn(
        command: &ScriptCommand<'_>,
        input: Input,
        errors: ErrorOutput,
        abort: AbortHandle,
    ) -> io::Result<Self> {
        let mut cmd = Command::new(command.program);
        cmd.args(command.args)
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .current_dir(command.cwd)
            .process_group(0)
            .stdout(Stdio::piped());
        cmd.stdin(match &input {
            Input::Inherit => Stdio::inherit(),
            Input::Null => Stdio::null(),
            Input::Stream(_) => Stdio::piped(),
        });
        cmd.stderr(match &errors {
            ErrorOutput::Inherit => Stdio::inherit(),
            ErrorOutput::Capture(_) => Stdio::piped(),
        });
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + command.timeout;
        let process_group = i32::try_from(child.id()).unwrap_or(0);
        abort.on_abort(Some(Box::new(move || kill_group(process_group))));
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        set_nonblocking(&stdout)?;
        let stderr = match (errors, child.stderr.take()) {
            (ErrorOutput::Capture(sink), Some(pipe)) => {
                set_nonblocking(&pipe)?;
                Some((pipe, sink))
            }
            _ => None,
        };
        let feeder_stop = match (input, child.stdin.take()) {
            (Input::Stream(source), Some(pipe)) => Some(start_feeder(source, pipe)?),
            _ => None,
        };
        let mut running = RunningScript {
            pidfd: pidfd_open(child.id()),
            child,
            process_group,
            stdout,
            stderr,
            deadline,
            exit: None,
            stdout_done: false,
            feeder_stop,
            abort,
            held: None,
        };
        if running.abort.is_aborted() {
            running.kill();
        }
        Ok(running)
    }

    /// Keeps `guard` alive until this run is dropped.
    pub fn hold(&mut self, guard: Box<dyn Send>) {
        self.held = Some(guard);
    }

    /// Reads the next chunk of the script's stdout. `Ok(0)` means the output has ended: the
    /// pipe closed, or the script exited and what it wrote has been read.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RunError> {
        loop {
            if self.abort.is_aborted() {
                self.kill();
                return Err(RunError::Aborted);
            }
            if self.stdout_done {
                return Ok(0);
            }
            match self.stdout.read(buf) {
                Ok(0) => {
                    self.stdout_done = true;
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(RunError::Io(e)),
            }
            if self.exit.is_some() {
                // The script is gone and the pipe is empty: whatever still holds it open is a
                // background child, whose later output is not part of this response.
                self.stdout_done = true;
                return Ok(0);
            }
            self.wait_for_event(true)?;
        }
    }

    /// Reads the whole output, up to `limit` bytes (more is an error).
    pub fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, RunError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > limit {
                self.kill();
                return Err(RunError::Io(io::Error::other(format!(
                    "more than {limit} bytes of output"
                ))));
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits for the script to exit, within its deadline.
    pub fn wait(mut self) -> Result<ExitStatus, RunError> {
        self.wait_in_place()
    }

    /// Waits for the script to exit, within its deadline, keeping the handle.
    pub fn wait_in_place(&mut self) -> Result<ExitStatus, RunError> {
        while self.exit.is_none() {
            self.wait_for_event(false)?;
        }
        if self.abort.is_aborted() {
            return Err(RunError::Aborted);
        }
        self.drain_stderr();
        self.exit.ok_or(RunError::Aborted)
    }

    /// Kills the script's whole process group and reaps the script. Once the script has been
    /// reaped its id may be reused, so nothing is signalled any more.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            kill_group(self.process_group);
            let status = self.child.wait().ok();
            self.record_exit(status);
        }
        // What the script said before it died is often why it died.
        self.drain_stderr();
    }

    /// Notes the script's exit; the abort handle forgets the process group at once, so a late
    /// abort cannot signal a reused id.
    fn record_exit(&mut self, status: Option<ExitStatus>) {
        if status.is_some() {
            self.abort.on_abort(None);
            // The slot is for running scripts: an exited one frees it for the next (or for this
            // request's own probe after a POST).
            self.held = None;
        }
        self.exit = status;
    }

    /// Blocks until stdout is readable (when `want_stdout`), stderr has data, the script exits,
    /// the deadline passes or the run is aborted.
    fn wait_for_event(&mut self, want_stdout: bool) -> Result<(), RunError> {
        if self.abort.is_aborted() {
            self.kill();
            return Err(RunError::Aborted);
        }
        let now = Instant::now();
        if now >= self.deadline {
            self.kill();
            return Err(RunError::Timeout);
        }
        let mut wait = self.deadline - now;
        // In this order: stdout (when wanted), stderr (when captured), the pidfd (when the
        // kernel has them). Each wake then reads only what poll found ready: a script's every
        // write to stdout wakes us, and an empty read of stderr and a `waitpid` on each of them
        // would double the system calls of the run.
        let mut fds = Vec::with_capacity(3);
        if want_stdout {
            fds.push(PollFd::new(&self.stdout, PollFlags::IN));
        }
        let stderr_at = self.stderr.as_ref().map(|(pipe, _)| {
            fds.push(PollFd::new(pipe, PollFlags::IN));
            fds.len() - 1
        });
        let pidfd_at = match &self.pidfd {
            Some(fd) => {
                fds.push(PollFd::new(fd, PollFlags::IN));
                Some(fds.len() - 1)
            }
            None => {
                wait = wait.min(FALLBACK_TICK);
                None
            }
        };
        match poll_for(&mut fds, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(RunError::Io(e)),
        }
        let ready = |at: Option<usize>| at.is_some_and(|i| !fds[i].revents().is_empty());
        let stderr_ready = ready(stderr_at);
        // Without a pidfd, only asking tells whether the script has exited.
        let maybe_exited = pidfd_at.is_none() || ready(pidfd_at);
        drop(fds);
        if stderr_ready {
            self.drain_stderr();
        }
        if self.exit.is_none() && maybe_exited {
            let status = self.child.try_wait().map_err(RunError::Io)?;
            self.record_exit(status);
        }
        Ok(())
    }

    fn drain_stderr(&mut self) {
        let Some((pipe, sink)) = &mut self.stderr else {
            return;
        };
        let mut buf = [0u8; 8 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.stderr = None;
                    return;
                }
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

impl Drop for RunningScript {
    fn drop(&mut self) {
        if let Some(stop) = &self.feeder_stop {
            stop.store(true, Ordering::SeqCst);
        }
        if self.exit.is_none() {
            self.kill();
        }
    }
}

/// Copies the request body to the script on its own thread, so a script that writes a large
/// response before reading its body cannot deadlock against us.
fn start_feeder(
    mut source: Box<dyn Read + Send>,
    pipe: std::process::ChildStdin,
) -> io::Result<Arc<AtomicBool>> {
    set_nonblocking(&pipe)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_seen = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("stdin-feeder".into())
        .spawn(move || {
            let mut pipe = pipe;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if write_all_polled(&mut pipe, &buf[..n], &stop_seen).is_err() {
                    // The script stopped reading (exited or closed stdin): drain the rest of
                    // the body so the sender is not left blocked.
                    while matches!(source.read(&mut buf), Ok(n) if n > 0) {
                        if stop_seen.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    return;
                }
            }
        })?;
    Ok(stop)
}

fn write_all_polled(
    pipe: &mut std::process::ChildStdin,
    mut data: &[u8],
    stop: &AtomicBool,
) -> io::Result<()> {
    while !data.is_empty() {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("run ended"));
        }
        match pipe.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Whatever poll says, the loop writes again (or sees `stop`) after the tick.
                let _ = poll_for(&mut [PollFd::new(pipe, PollFlags::OUT)], FEEDER_TICK);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits up to `wait` (at least a millisecond, so a nearly spent deadline does not spin) for
/// one of `fds` to be ready.
fn poll_for(fds: &mut [PollFd<'_>], wait: Duration) -> io::Result<()> {
    let wait = wait.max(Duration::from_millis(1));
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    rustix::event::poll(fds, Some(&timeout))?;
    Ok(())
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true)?;
    Ok(())
}

/// A descriptor that becomes readable when the process exits (Linux ≥ 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()
}

fn kill_group(process_group: i32) {
    // Never 0 (our own group) or 1 (init's).
    if process_group > 1
        && let Some(group) = Pid::from_raw(process_group)
    {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/bin/sh -c SCRIPT`, owning what its [`ScriptCommand`] borrows.
    struct Sh {
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        timeout: Duration,
    }

    impl Sh {
        fn command(&self) -> ScriptCommand<'_> {
            ScriptCommand {
                program: Path::new("/bin/sh"),
                args: &self.args,
                env: &self.env,
                cwd: Path::new("/"),
                timeout: self.timeout,
            }
        }
    }

    fn sh(script: &str, timeout_ms: u64) -> Sh {
        Sh {
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn run(cmd: &Sh, input: Input) -> (Result<Vec<u8>, RunError>, RunningScript) {
        let mut r = RunningScript::spawn(
            &cmd.command(),
            input,
            ErrorOutput::Inherit,
            AbortHandle::new(),
        )
        .unwrap();
        (r.read_to_end(1 << 30), r)
    }

    #[test]
    fn output_and_exit_status() {
        let (out, r) = run(&sh("printf hello; exit 3", 5000), Input::Null);
        assert_eq!(out.unwrap(), b"hello");
        assert_eq!(r.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn background_child_holding_stdout_does_not_hang_the_response() {
        let start = Instant::now();
        let (out, r) = run(&sh("printf done; sleep 30 & exit 0", 20_000), Input::Null);
        assert_eq!(out.unwrap(), b"done");
        assert!(r.wait().unwrap().success());
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let marker = std::env::temp_dir().join(format!("hc-grp-{}", std::process::id()));
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let (out, _r) = run(&sh(&script, 300), Input::Null);
        assert!(matches!(out, Err(RunError::Timeout)));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "grandchild survived the timeout");
    }

    #[test]
    fn large_output_before_reading_stdin_does_not_deadlock() {
        let body = vec![b'x'; 1 << 20];
        let script = "head -c 300000 /dev/zero; wc -c";
        let (out, r) = run(
            &sh(script, 10_000),
            Input::Stream(Box::new(io::Cursor::new(body))),
        );
        let out = out.unwrap();
        assert_eq!(out.len(), 300_000 + "1048576\n".len());
        assert!(out.ends_with(b"1048576\n"));
        assert!(r.wait().unwrap().success());
    }

    #[test]
    fn a_held_slot_is_released_when_the_script_exits() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let released = Arc::new(AtomicBool::new(false));
        let mut r = RunningScript::spawn(
            &sh("printf x", 5000).command(),
            Input::Null,
            ErrorOutput::Inherit,
            AbortHandle::new(),
        )
        .unwrap();
        r.hold(Box::new(Flag(Arc::clone(&released))));
        assert_eq!(r.read_to_end(1024).unwrap(), b"x");
        r.wait_in_place().unwrap();
        assert!(released.load(Ordering::SeqCst), "still held after exit");
        drop(r);
    }

    #[test]
    fn stderr_is_captured() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        let sink = Arc::new(move |b: &[u8]| sink_seen.lock().unwrap().extend_from_slice(b));
        let cmd = sh("echo oops >&2; echo out", 5000);
        let mut r = RunningScript::spawn(
            &cmd.command(),
            Input::Null,
            ErrorOutput::Capture(sink),
            AbortHandle::new(),
        )
        .unwrap();
        assert_eq!(r.read_to_end(1024).unwrap(), b"out\n");
        r.wait().unwrap();
        assert_eq!(&*seen.lock().unwrap(), b"oops\n");
    }

    #[test]
    fn abort_kills_the_script() {
        let abort = AbortHandle::new();
        let mut r = RunningScript::spawn(
            &sh("sleep 30", 60_000).command(),
            Input::Null,
            ErrorOutput::Inherit,
            abort.clone(),
        )
        .unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            abort.abort();
        });
        let mut buf = [0u8; 16];
        assert!(matches!(r.read(&mut buf), Err(RunError::Aborted)));
        killer.join().unwrap();
    }
}
