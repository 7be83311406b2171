//! Which accepted connections are served: at most `--max-connections` at once, as nginx's
//! `worker_connections`. Past the cap a connection is closed at once (it costs a descriptor
//! only for that instant), and a refusal or accept-error episode is logged once when it
//! starts and once when it ends, never once per connection or per retry.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::front_end::log;

/// The connection cap and the state of the episodes being logged.
pub struct Admission {
    permits: Arc<Semaphore>,
    cap: usize,
    /// Connections closed since the cap was reached; 0 outside an episode.
    refused: u64,
    /// Accept calls failed in a row (out of descriptors, mostly); 0 outside an episode.
    failures: u64,
}

impl Admission {
    /// Lets at most `cap` connections in at once.
    pub fn new(cap: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            refused: 0,
            failures: 0,
        }
    }

    /// A permit for a connection just accepted, held until it closes; `None` past the cap.
    pub fn admit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.accept_succeeded();
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                if self.refused > 0 {
                    log(format_args!(
                        "accepting connections again ({} refused at the cap of {})",
                        self.refused, self.cap
                    ));
                    self.refused = 0;
                }
                Some(permit)
            }
            Err(_) => {
                if self.refused == 0 {
                    log(format_args!(
                        "{} connections open (--max-connections): closing new ones until some end",
                        self.cap
                    ));
                }
                self.refused += 1;
                None
            }
        }
    }

    /// Records a failed accept; logs only the first of a run.
    pub fn accept_failed(&mut self, error: &std::io::Error) {
        if self.failures == 0 {
            log(format_args!("accept failed: {error}; retrying quietly"));
        }
        self.failures += 1;
    }

    fn accept_succeeded(&mut self) {
        if self.failures > 0 {
            log(format_args!(
                "accepting again after {} failed attempt(s)",
                self.failures
            ));
            self.failures = 0;
        }
    }
}

/// Descriptors a connection may hold: its socket, and the temp file of an upload past
/// memory.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// Descriptors a running script holds on our side: stdin, stdout and stderr pipes, its pidfd,
/// and slack for an upstream connection.
const DESCRIPTORS_PER_SCRIPT: u64 = 8;
/// The listener, the runtime's own, stdio, and headroom.
const DESCRIPTORS_BASE: u64 = 64;

/// The connection cap that fits the descriptor limit (`ulimit -n`), so the cap is reached
/// before the descriptors run out: raises the soft limit toward the hard one when the cap
/// needs it (as nginx's `worker_rlimit_nofile`), and lowers the cap, saying so, when even the
/// hard limit is too small.
pub fn fit_to_descriptors(cap: usize, scripts: usize) -> usize {
    let reserve = DESCRIPTORS_BASE + DESCRIPTORS_PER_SCRIPT * scripts as u64;
    let needed = reserve + DESCRIPTORS_PER_CONNECTION * cap as u64;
    let limit = getrlimit(Resource::Nofile);
    // No limit at all (RLIM_INFINITY) is as good as any number.
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let mut current = limit.current.unwrap_or(u64::MAX);
    if current < needed {
        let raised = needed.min(hard);
        let wanted = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            current = raised;
        }
    }
    let fits = current.saturating_sub(reserve) / DESCRIPTORS_PER_CONNECTION;
    if fits >= cap as u64 {
        return cap;
    }
    let fits = usize::try_from(fits).unwrap_or(cap).max(1);
    log(format_args!(
        "the descriptor limit ({}) allows {fits} connections, not --max-connections {cap}; using {fits}",
        current
    ));
    fits
}
