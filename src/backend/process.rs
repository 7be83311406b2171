//! The script as a child process (CGI/1.1, RFC 3875): the runner's process group, pipes and
//! deadline behind the [`Backend`] interface, with the `--max-children` slot held while it runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use super::{AbortHandle, Backend, Ended, ErrorOutput, Input, RunError, ScriptCall, ScriptRun};
use crate::failure::Failure;
use crate::runner::{RunningScript, ScriptCommand};
use crate::slots::Slots;

/// Attempts to start a script that is busy being written (ETXTBSY) before giving up.
const TEXT_BUSY_RETRIES: u32 = 5;
/// Pause between those attempts.
const TEXT_BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs `program args…` in `cwd` for each request.
pub struct ProcessBackend {
    /// The interpreter, or the script itself.
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<OsString>,
    /// The script's folder (RFC 3875 §7.2 suggests it; php-cgi expects it).
    pub cwd: PathBuf,
    /// The `--max-children` cap, when the front end has one.
    pub slots: Option<Arc<Slots>>,
    /// The script's name, for errors.
    pub name: String,
}

impl Backend for ProcessBackend {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn start(
        &self,
        call: &ScriptCall<'_>,
        input: Input,
        errors: &ErrorOutput,
        abort: &AbortHandle,
    ) -> Result<Box<dyn ScriptRun>, Failure> {
        // A slot is held while the script runs; 503 when none frees in time.
        let slot = self.slots.as_ref().map(|s| s.acquire()).transpose()?;
        let command = ScriptCommand {
            program: &self.program,
            args: &self.args,
            env: call.env,
            cwd: &self.cwd,
            timeout: call.timeout,
        };
        let mut input = input;
        let mut attempt = 0;
        let mut running = loop {
            // Only a body not handed over yet can be offered again.
            let again = match &input {
                Input::Inherit => Some(Input::Inherit),
                Input::Null => Some(Input::Null),
                Input::Stream(_) => None,
            };
            match RunningScript::spawn(&command, input, errors.clone(), abort.clone()) {
                // A script written a moment ago may still be open for writing in a process
                // forked meanwhile (a deploy tool, a test harness): ETXTBSY clears within
                // milliseconds.
                Err(e)
                    if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                        && attempt < TEXT_BUSY_RETRIES =>
                {
                    let Some(again) = again else { break Err(e) };
                    attempt += 1;
                    std::thread::sleep(TEXT_BUSY_PAUSE);
                    input = again;
                }
                other => break other,
            }
        }
        .map_err(|e| Failure::SpawnFailed {
            script: self.name.clone(),
            reason: e.to_string(),
        })?;
        if let Some(slot) = slot {
            running.hold(Box::new(slot));
        }
        Ok(Box::new(running))
    }
}

impl ScriptRun for RunningScript {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, RunError> {
        RunningScript::read(self, buf)
    }

    fn wait(&mut self) -> Result<Ended, RunError> {
        let status = self.wait_in_place()?;
        Ok(if status.success() {
            Ended::Success
        } else {
            Ended::Failed(status.to_string())
        })
    }

    fn kill(&mut self) {
        RunningScript::kill(self);
    }
}
