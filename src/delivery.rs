//! From a script's output to the response: reading its head, buffering what fits (so a failure
//! is still a clean 502 and the body gets a Content-Length), streaming the rest with its coding.

use std::ffi::OsString;
use std::io::{self, Write};
use std::time::SystemTime;

use crate::backend::{AbortHandle, Ended, ErrorOutput, RunError, ScriptRun};
use crate::cgi_head::{self, HeadParse};
use crate::encoding::{self, BodyEncoder, Coding};
use crate::failure::Failure;
use crate::job::{Answer, Outcome, RequestBody, Runs};
use crate::launch::{Plan, Purpose};
use crate::range;
use crate::request::{Method, Request};
use crate::response::{BodyWriter, ResponseHead, ResponseSink};

/// Bodies up to this size are buffered whole, so they get a Content-Length and a script failure
/// can still become a clean 502; larger ones stream with flat memory.
pub const BUFFER_LIMIT: usize = 256 * 1024;
/// How much of a script's output one read takes.
const READ_CHUNK: usize = 64 * 1024;
/// How far a request got; decides what can still be sent when something fails.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) head_sent: bool,
    pub(crate) input_taken: bool,
    pub(crate) body_bytes: u64,
    /// Scripts started, once known.
    pub(crate) runs: Runs,
    /// The script's real path, once resolved (for [`Outcome::script`]).
    pub(crate) script: Option<std::path::PathBuf>,
}

/// One request in flight: what it reads from and writes to, and how far it got.
pub(crate) struct Exchange<'a> {
    pub(crate) request: &'a Request,
    pub(crate) body: &'a mut dyn RequestBody,
    pub(crate) errors: &'a ErrorOutput,
    pub(crate) abort: &'a AbortHandle,
    pub(crate) sink: &'a mut dyn ResponseSink,
    pub(crate) progress: Progress,
    /// Answer a local redirect without `Status` with 302 (see `Engine`).
    pub(crate) found_for_local_redirects: bool,
}

/// A script's output once its head has been read.
pub(crate) struct Output {
    pub(crate) running: Box<dyn ScriptRun>,
    pub(crate) head: ResponseHead,
    /// Body bytes read so far.
    pub(crate) buffered: Vec<u8>,
    /// The whole body is in `buffered` and the script exited successfully.
    pub(crate) complete: bool,
}

/// Starts the script and reads its head and as much body as fits the buffer.
pub(crate) fn start(
    plan: &Plan,
    extra: &[(&str, OsString)],
    ex: &mut Exchange<'_>,
) -> Result<Output, Failure> {
    let running = plan.start(
        Purpose::Page,
        ex.request,
        extra,
        ex.body.take_input(),
        ex.errors,
        ex.abort,
    )?;
    // Only a script that started has the body; otherwise the failure answer still reads it.
    ex.progress.input_taken = true;
    read_output(plan, running, ex)
}

/// Reads a started run's head and as much body as fits the buffer.
pub(crate) fn read_output(
    plan: &Plan,
    mut running: Box<dyn ScriptRun>,
    ex: &Exchange<'_>,
) -> Result<Output, Failure> {
    let mut buffered = Vec::with_capacity(8 * 1024);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut at_eof = false;
    let (mut head, body_at) = loop {
        match cgi_head::parse(&buffered, at_eof) {
            HeadParse::Complete(head, body_at) => break (head, body_at),
            HeadParse::Malformed(reason) => {
                // A script that failed says more by its exit status than by its broken output.
                if at_eof {
                    plan.wait_success(running.as_mut())?;
                } else {
                    running.kill();
                }
                return Err(Failure::MalformedHead {
                    script: plan.script.name.clone(),
                    reason,
                });
            }
            HeadParse::Incomplete => {}
        }
        let n = running.read(&mut chunk).map_err(|e| plan.run_error(e))?;
        at_eof = n == 0;
        buffered.extend_from_slice(&chunk[..n]);
    };
    buffered.drain(..body_at);
    if head.local_redirect && ex.found_for_local_redirects {
        head.status = 302;
        head.reason = "Found".into();
    }
    while !at_eof && buffered.len() <= BUFFER_LIMIT {
        let n = running.read(&mut chunk).map_err(|e| plan.run_error(e))?;
        at_eof = n == 0;
        buffered.extend_from_slice(&chunk[..n]);
    }
    let complete = at_eof;
    if complete {
        plan.wait_success(running.as_mut())?;
    }
    Ok(Output {
        running,
        head,
        buffered,
        complete,
    })
}

/// Reads the rest of a script's output into nothing and checks its exit.
pub(crate) fn finish_silently(mut output: Output, plan: &Plan) -> Result<(), Failure> {
    if output.complete {
        return Ok(());
    }
    let mut chunk = vec![0u8; READ_CHUNK];
    drain(output.running.as_mut(), &mut chunk).map_err(|e| plan.run_error(e))?;
    plan.wait_success(output.running.as_mut())
}

/// Sends the head and body: whole with a Content-Length when buffered, streamed otherwise.
/// With `ranges` (a declared script), a buffered body answers Range and If-Range (RFC 9110
/// §14) in the bytes of its coding.
pub(crate) fn send(
    mut output: Output,
    coding: Coding,
    method: &Method,
    ranges: bool,
    ex: &mut Exchange<'_>,
) -> Result<Outcome, Failure> {
    let head = &mut output.head;
    let status = head.status;
    let is_head = *method == Method::Head;
    let progress = &mut ex.progress;
    if let Some(token) = coding.token() {
        head.remove(&["Content-Length"]);
        head.push("Content-Encoding", token);
    }
    // RFC 9110 §6.4.1, §8.6: no content, and no Content-Length of ours, on 1xx, 204 and 304.
    let bodiless = status < 200 || status == 204 || status == 304;
    if bodiless {
        output.buffered.clear();
        if !output.complete {
            // The head is all a 1xx/204/304 sends; the rest is read so the run can end well.
            let mut chunk = vec![0u8; READ_CHUNK];
            let ended =
                drain(output.running.as_mut(), &mut chunk).and_then(|()| output.running.wait());
            if !matches!(ended, Ok(Ended::Success)) {
                crate::log::line(&format!(
                    "{status} from a script that then failed: {ended:?}"
                ));
            }
        }
    }
    if output.complete || bodiless {
        let mut body = encoding::encode_all(coding, &output.buffered)?;
        if ranges && !bodiless {
            body = range::respond(ex.request, SystemTime::now(), head, body).body;
        } else if !bodiless {
            head.remove(&["Content-Length"]);
            head.push("Content-Length", body.len().to_string());
        }
        let sent: &[u8] = if is_head { b"" } else { &body };
        // The head counts as sent from here: a failure now cannot become a clean answer.
        progress.head_sent = true;
        ex.sink.send_whole(head, sent)?;
        progress.body_bytes = sent.len() as u64;
        return Ok(ran(head.status, progress.body_bytes, true));
    }
    // A script's own Content-Length goes out only when it is one valid length, and then the
    // body is held to it.
    let announced = match head.get("Content-Length").map(content_length) {
        Some(Some(length)) => Some(length),
        Some(None) => {
            head.remove(&["Content-Length"]);
            None
        }
        None => None,
    };
    ex.sink.send_head(head)?;
    progress.head_sent = true;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut writer = BodyWriter::new(&mut *ex.sink);
    // With an announced length, its last byte waits for the run's success (below).
    let mut last_byte = None;
    let result = if is_head {
        drain(output.running.as_mut(), &mut chunk)
    } else if let Some(length) = announced {
        let mut held = AnnouncedLength::new(&mut writer, length);
        stream(&mut output, Coding::Identity, &mut held, &mut chunk).and_then(|()| {
            last_byte = held.finish().map_err(RunError::Io)?;
            Ok(())
        })
    } else {
        stream(&mut output, coding, &mut writer, &mut chunk)
    };
    let exit = result.and_then(|()| output.running.wait());
    let mut complete = matches!(&exit, Ok(Ended::Success));
    if complete && let Some(byte) = last_byte {
        complete = writer.write_all(&[byte]).is_ok();
    }
    progress.body_bytes = writer.written;
    if let Err(e) = &exit {
        crate::log::line(&format!("response cut short: {e:?}"));
    } else if !complete {
        crate::log::line(&format!(
            "script failed after its response started: {exit:?}"
        ));
    }
    ex.sink.finish()?;
    Ok(ran(status, progress.body_bytes, complete))
}

fn stream(
    output: &mut Output,
    coding: Coding,
    writer: &mut dyn Write,
    chunk: &mut [u8],
) -> Result<(), RunError> {
    let mut encoder = BodyEncoder::new(coding, writer);
    encoder.write_all(&output.buffered).map_err(RunError::Io)?;
    output.buffered = Vec::new();
    loop {
        let n = output.running.read(chunk)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&chunk[..n]).map_err(RunError::Io)?;
    }
    encoder.finish().map_err(RunError::Io)?;
    Ok(())
}

/// A Content-Length value: one decimal number (RFC 9110 §8.6); anything else is `None`.
fn content_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Holds a streamed body to the length its script announced: never more, and the last byte
/// only once the output has ended exactly there. A body that overruns or falls short thus
/// always ends cut short, never as a complete-looking response.
struct AnnouncedLength<'a> {
    inner: &'a mut dyn Write,
    announced: u64,
    received: u64,
    last: Option<u8>,
}

impl<'a> AnnouncedLength<'a> {
    fn new(inner: &'a mut dyn Write, announced: u64) -> Self {
        AnnouncedLength {
            inner,
            announced,
            received: 0,
            last: None,
        }
    }

    /// The output ended: the held last byte, when it was exactly as long as announced, for
    /// the caller to send once the run has also ended well.
    fn finish(self) -> io::Result<Option<u8>> {
        if self.received != self.announced {
            return Err(io::Error::other(format!(
                "the script announced Content-Length {} and wrote {} bytes",
                self.announced, self.received
            )));
        }
        Ok(self.last)
    }
}

impl Write for AnnouncedLength<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let total = self.received + buf.len() as u64;
        if total > self.announced {
            return Err(io::Error::other(format!(
                "the script wrote more than its Content-Length {}",
                self.announced
            )));
        }
        self.received = total;
        match buf.split_last() {
            Some((&last, rest)) if total == self.announced => {
                self.inner.write_all(rest)?;
                self.last = Some(last);
            }
            _ => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn drain(running: &mut dyn ScriptRun, chunk: &mut [u8]) -> Result<(), RunError> {
    while running.read(chunk)? > 0 {}
    Ok(())
}

pub(crate) fn ran(status: u16, body_bytes: u64, complete: bool) -> Outcome {
    Outcome {
        status,
        answer: Answer::Ran,
        body_bytes,
        complete,
        runs: Runs::default(),
        script: None,
    }
}

/// The head of a short plain-text answer: never cached, with its length.
pub fn text_head(status: u16, length: usize) -> ResponseHead {
    let mut head = ResponseHead::new(status);
    head.push("Content-Type", "text/plain; charset=utf-8");
    head.push("Content-Length", length.to_string());
    head.push("Cache-Control", "no-store");
    head
}

/// Sends a short plain-text response (errors, 412).
pub fn send_text(sink: &mut dyn ResponseSink, status: u16, text: &str) -> io::Result<()> {
    sink.send_head(&text_head(status, text.len()))?;
    sink.send_body(text.as_bytes())?;
    sink.finish()
}
