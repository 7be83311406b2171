//! What std's runtime start-up (`lang_start`) did that the binary relies on, for a `main` that
//! skips it (src/main.rs says why).
//!
//! Kept from std's start-up: the standard descriptors reopened on /dev/null when closed, and
//! SIGPIPE ignored; at the end, a panic's exit status (101) and stdout flushed. Left out: the
//! SIGSEGV/SIGBUS handler that prints "has overflowed its stack" (an overflow still ends the
//! process, by SIGSEGV, without that line) and the main thread's name for panic messages.

use std::any::Any;
use std::process::ExitCode;

/// The exit status std gives a `main` that panicked.
const PANIC_EXIT_STATUS: u8 = 101;

/// Sets up the process as std's start-up would have, before any other work.
pub fn prepare() {
    reopen_closed_standard_descriptors();
    ignore_sigpipe();
}

/// Ends the process with `main`'s exit code (101 after a panic, whose message the panic hook
/// has already printed); `std::process::exit` flushes stdout first.
pub fn finish(outcome: Result<ExitCode, Box<dyn Any + Send>>) -> ! {
    let code = outcome.unwrap_or(ExitCode::from(PANIC_EXIT_STATUS));
    std::process::exit(exit_status(code))
}

/// The status an `ExitCode` stands for: it has no stable accessor (`ExitCode::exit_process`
/// is unstable, rust-lang/rust#97100), but every code a program can make is some
/// `ExitCode::from(u8)`, and codes compare.
fn exit_status(code: ExitCode) -> i32 {
    (0..=u8::MAX)
        .find(|&n| ExitCode::from(n) == code)
        .map_or(1, i32::from)
}

/// A server may start the process with stdin, stdout or stderr closed; the first file opened
/// would then take that number, and a log line or the response would land in it.
fn reopen_closed_standard_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the call's duration; a zero timeout
    // never blocks. poll only reports on the descriptors, it takes no ownership of them.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled < 0 {
        // Too many descriptors or no memory: std carries on likewise (through its fcntl
        // fallback, which cannot fail differently here).
        return;
    }
    for pfd in fds.iter().filter(|pfd| pfd.revents & libc::POLLNVAL != 0) {
        // SAFETY: a NUL-terminated path and plain flags; the descriptor returned is the lowest
        // free one, which is the closed standard one being filled (lowest first).
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd != pfd.fd {
            // As std: better no process than a response written into some other file.
            std::process::abort();
        }
    }
}

/// A client that leaves mid-response must give the writer EPIPE (a logged, orderly end) rather
/// than kill it; std's start-up ignores SIGPIPE for the same reason. Scripts started through
/// `std::process::Command` still get the default action back (std resets it in the child).
fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; it happens
    // before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_is_the_one_the_exit_code_was_made_from() {
        for (code, status) in [
            (ExitCode::SUCCESS, 0),
            (ExitCode::FAILURE, 1),
            (ExitCode::from(2), 2),
            (ExitCode::from(PANIC_EXIT_STATUS), 101),
            (ExitCode::from(255), 255),
        ] {
            assert_eq!(exit_status(code), status);
        }
    }
}
