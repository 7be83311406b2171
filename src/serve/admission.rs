//! Which accepted connections are served: at most `--max-connections` at once, as nginx's
//! `worker_connections`. Past the cap a connection is closed at once (it costs a descriptor
//! only for that instant), and a refusal or accept-error episode is logged once when it
//! starts and once when it ends, never once per connection or per retry.

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
