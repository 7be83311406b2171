//! The script as a child process (CGI/1.1, RFC 3875): the runner's process group, pipes and
//! deadline behind the [`Backend`] interface, with the `--max-children` slot held while it runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use super::{AbortHandle, Backend, Ended, ErrorOutput, Input, RunError, ScriptCall, ScriptRun};
use crate::failure::Failure;
use crate::runner::{RunningScript, ScriptCommand};
use crate::slots::Slots;

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
            program: self.program.clone(),
            args: self.args.clone(),
            env: call.env.to_vec(),
            cwd: self.cwd.clone(),
            timeout: call.timeout,
        };
        let mut running = RunningScript::spawn(&command, input, errors.clone(), abort.clone())
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
