//! One FastCGI request handed to the synchronous engine on a blocking thread, through
//! adapters: FCGI_PARAMS become the `Request`, FCGI_STDIN a streamed body, the engine's sink
//! FCGI_STDOUT records, and the script's stderr FCGI_STDERR records. A request the engine
//! begins as a forward to a FastCGI application runs on a task instead ([`begin`]), and only a
//! response still streaming goes to a blocking thread.
//!
//! Both directions go through bounded channels, so neither a large upload nor a large
//! response is ever held whole: the connection stops reading when the script stops reading
//! its stdin, and the engine blocks when the web server stops reading the response.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::task::JoinHandle;

use super::Service;
use super::codec::{Outgoing, REQUEST_COMPLETE};
use crate::backend::{AbortHandle, Input};
use crate::backend::{ErrorOutput, Prefetch, ScriptRun};
use crate::engine::{Begun, Forward, Job, Outcome, RequestBody};
use crate::failure::Failure;
use crate::front_end;
use crate::request::Request;
use crate::response::{ResponseHead, ResponseSink, cgi_head_bytes};
use crate::stderr_relay::{LineSink, StderrRelay};

/// What the connection's writer sends.
#[derive(Debug)]
pub enum Frame {
    /// One record.
    Record(Outgoing),
    /// The end of a request: the rest of its output, the empty STDOUT (and STDERR) that end
    /// the streams, then END_REQUEST; together, so a short response leaves in one write.
    End {
        /// The request id.
        id: u16,
        /// Output not sent yet (may be empty).
        tail: Bytes,
        /// Whether FCGI_STDERR was used and so must be ended too.
        stderr_used: bool,
        /// END_REQUEST's appStatus: 0, or 1 when the response could not be completed.
        app_status: u32,
        /// END_REQUEST's protocolStatus.
        protocol_status: u8,
    },
    /// The response was cut short after its head went out (the script failed or timed out
    /// mid-body): what is queued before this is written, then the connection is closed
    /// without END_REQUEST, so the web server sees "upstream prematurely closed" and does not
    /// pass the truncated body off as complete (nginx aborts the client's response).
    Cut,
}

impl Frame {
    /// The records this frame is written as; never an empty STDOUT before the end. A
    /// [`Frame::Cut`] has none: it closes the connection instead.
    pub fn into_records(self) -> Vec<Outgoing> {
        match self {
            Frame::Record(record) => vec![record],
            Frame::Cut => Vec::new(),
            Frame::End {
                id,
                tail,
                stderr_used,
                app_status,
                protocol_status,
            } => {
                let mut records = Vec::with_capacity(4);
                if !tail.is_empty() {
                    records.push(Outgoing::Stdout { id, content: tail });
                }
                records.push(Outgoing::Stdout {
                    id,
                    content: Bytes::new(),
                });
                if stderr_used {
                    records.push(Outgoing::Stderr {
                        id,
                        content: Bytes::new(),
                    });
                }
                records.push(Outgoing::EndRequest {
                    id,
                    app_status,
                    protocol_status,
                });
                records
            }
        }
    }
}

/// A request the engine is working on.
pub struct Started {
    /// FCGI_STDIN content for the script; `None` once the body has ended (or the script
    /// stopped reading it).
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Kills the script's process group (FCGI_ABORT_REQUEST, connection closed).
    pub abort: AbortHandle,
    /// The blocking task; it has queued END_REQUEST (or [`Frame::Cut`]) when it ends.
    pub task: JoinHandle<()>,
    /// Set just before END_REQUEST is queued: a record that arrives after it (the web
    /// server's next BEGIN_REQUEST) may find the task not quite returned, and must wait for
    /// it rather than take the connection for multiplexing.
    pub ending: Arc<AtomicBool>,
}

/// The script a request names: SCRIPT_FILENAME, else DOCUMENT_ROOT + SCRIPT_NAME.
pub fn script_path(request: &Request) -> Option<PathBuf> {
    let var = |name| request.var(name).filter(|v| !v.is_empty());
    if let Some(file) = var("SCRIPT_FILENAME") {
        // Apache mod_proxy_fcgi (without `ProxyFCGIBackendType GENERIC`) sends
        // `proxy:fcgi://HOST/abs/path`, as PHP-FPM knows: the path starts at HOST's end.
        let file = match file.strip_prefix(b"proxy:fcgi://") {
            Some(rest) => &rest[rest.iter().position(|&b| b == b'/')?..],
            None => file,
        };
        return Some(PathBuf::from(OsStr::from_bytes(file)));
    }
    let (root, name) = (var("DOCUMENT_ROOT")?, var("SCRIPT_NAME")?);
    // Concatenated, not joined: SCRIPT_NAME is absolute and `Path::join` would drop the root.
    let mut path = root.to_vec();
    if !root.ends_with(b"/") && !name.starts_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    Some(PathBuf::from(OsStr::from_bytes(&path)))
}

/// The engine's job for `request`.
pub fn job<'a>(service: &Service, request: &'a Request) -> Job<'a> {
    Job {
        request,
        script: script_path(request),
        interpreter: None,
        timeout: service.timeout,
        base_env: service.base_env.clone(),
    }
}

/// How the connection goes on with a request whose params are in ([`begin`]).
pub enum Begin {
    /// The whole response, as the frame that ends the request: a declared 304 or 412 given
    /// without running anything.
    Answered(Frame),
    /// The request is being answered.
    Started(Started),
}

/// Begins request `id` on the connection's task ([`crate::engine::Engine::begin`]): a declared 304 or 412 is
/// answered at once; a page its backend made ready runs on a task of its own (`forward_on_task`);
/// anything else goes to the engine on a blocking thread ([`start`]).
pub fn begin(service: &Arc<Service>, id: u16, request: Request, out: mpsc::Sender<Frame>) -> Begin {
    let started = Instant::now();
    match service.engine.begin(&job(service, &request)) {
        Begun::Answered(answer) => {
            record(service, &answer.outcome, started, &request);
            let mut tail = cgi_head_bytes(&answer.head);
            tail.extend_from_slice(answer.body);
            Begin::Answered(Frame::End {
                id,
                tail: Bytes::from(tail),
                stderr_used: false,
                app_status: 0,
                protocol_status: REQUEST_COMPLETE,
            })
        }
        Begun::Forward { forward, prefetch } => Begin::Started(forward_on_task(
            service,
            Forwarded {
                id,
                request,
                forward,
                prefetch,
                started,
            },
            out,
        )),
        Begun::Handle => Begin::Started(start(service, id, request, out)),
    }
}

/// A request [`Engine::begin`] made ready to forward, and when it began.
struct Forwarded {
    id: u16,
    request: Request,
    forward: Box<Forward>,
    prefetch: Prefetch,
    started: Instant,
}

/// Runs a prefetched request on a task of the runtime: the upstream exchange without a
/// blocking thread, then [`Engine::finish`] right there when the whole response is in hand
/// (CPU work only, into one END frame), or on a blocking thread when it is still coming
/// (a large or streaming page, which then streams as any other).
fn forward_on_task(service: &Arc<Service>, job: Forwarded, out: mpsc::Sender<Frame>) -> Started {
    // No body was announced: whatever FCGI_STDIN brings is dropped (php-fpm, like the CGI
    // spec, reads only CONTENT_LENGTH bytes of it anyway).
    let (stdin, _) = mpsc::channel(1);
    let abort = AbortHandle::new();
    let ending = Arc::new(AtomicBool::new(false));
    let service = Arc::clone(service);
    let (job_abort, job_ending) = (abort.clone(), Arc::clone(&ending));
    let task = tokio::spawn(async move {
        let Forwarded {
            id,
            request,
            forward,
            prefetch,
            started,
        } = job;
        let abort = job_abort;
        let in_flight = service.metrics.as_ref().map(|m| m.in_flight());
        let lines = StderrLines::new(id, out.clone(), false);
        let relay = StderrRelay::new(None, StderrLines::sink(&lines));
        let errors = relay.output();
        let fetched = prefetch.fetch(&errors, &abort).await;
        let sink = RecordSink::new(id, out.clone(), abort.clone(), fetched.whole);
        let finished = if fetched.whole {
            let parts = (forward, fetched.run, sink);
            Ok(finish(&service, &request, parts, &errors, &abort, started))
        } else {
            lines.flush().await;
            lines.set_blocking(true);
            let (service, errors, abort) = (Arc::clone(&service), errors.clone(), abort.clone());
            let parts = (forward, fetched.run, sink);
            let finished = tokio::task::spawn_blocking(move || {
                finish(&service, &request, parts, &errors, &abort, started)
            })
            .await;
            lines.set_blocking(false);
            finished
        };
        let (outcome, sink) = match finished {
            Ok(finished) => finished,
            Err(e) => {
                // A panic in the engine: what was sent for this request is unknown.
                crate::front_end::log(format_args!("request {id} failed: {e}"));
                let _ = out.send(Frame::Cut).await;
                return;
            }
        };
        drop(in_flight);
        // A last line without `\n` goes out before the records that end the request.
        relay.finish();
        drop(errors);
        lines.flush().await;
        job_ending.store(true, Ordering::SeqCst);
        let _ = out.send(sink.end(outcome.complete, lines.used())).await;
    });
    Started {
        stdin: Some(stdin),
        abort,
        task,
        ending,
    }
}

/// Counts an answered request in the metrics, when they are on.
fn record(service: &Service, outcome: &Outcome, started: Instant, request: &Request) {
    if let Some(metrics) = &service.metrics {
        let query = String::from_utf8_lossy(request.var("QUERY_STRING").unwrap_or_default());
        metrics.record(outcome, started.elapsed(), &query);
    }
}

/// Starts the engine on request `id` on a blocking thread; its output goes to `out`.
pub fn start(
    service: &Arc<Service>,
    id: u16,
    request: Request,
    out: mpsc::Sender<Frame>,
) -> Started {
    let (stdin, stdin_rx) = mpsc::channel(service.limits.stdin_queue.max(1));
    let abort = AbortHandle::new();
    let ending = Arc::new(AtomicBool::new(false));
    let service = Arc::clone(service);
    let (job_abort, job_ending) = (abort.clone(), Arc::clone(&ending));
    let task = tokio::task::spawn_blocking(move || {
        run_job(
            &service,
            id,
            request,
            stdin_rx,
            &job_abort,
            &job_ending,
            out,
        );
    });
    Started {
        stdin: Some(stdin),
        abort,
        task,
        ending,
    }
}

impl Drop for Started {
    /// A request dropped before its task ended (its connection's task panicked, say) must
    /// not leave the script running on its own.
    fn drop(&mut self) {
        if !self.task.is_finished() {
            self.abort.abort();
        }
    }
}

fn run_job(
    service: &Service,
    id: u16,
    request: Request,
    stdin: mpsc::Receiver<Bytes>,
    abort: &AbortHandle,
    ending: &AtomicBool,
    out: mpsc::Sender<Frame>,
) {
    let started = Instant::now();
    let in_flight = service.metrics.as_ref().map(|m| m.in_flight());
    let mut body = StdinBody {
        reader: Some(BodyReader {
            rx: stdin,
            current: Bytes::new(),
            abort: abort.clone(),
        }),
    };
    let lines = StderrLines::new(id, out.clone(), true);
    let relay = StderrRelay::new(None, StderrLines::sink(&lines));
    let errors = relay.output();
    let mut sink = RecordSink::new(id, out.clone(), abort.clone(), false);
    let job = job(service, &request);
    let outcome = service
        .engine
        .handle(&job, &mut body, &errors, abort, &mut sink);
    record(service, &outcome, started, &request);
    drop(in_flight);
    // The body is over whatever the engine did with it: stop queueing stdin for it.
    drop(body);
    // A last line without `\n` goes out before the records that end the request.
    relay.finish();
    drop(errors);
    ending.store(true, Ordering::SeqCst);
    let _ = out.blocking_send(sink.end(outcome.complete, lines.used()));
}

/// [`Engine::finish`] into the sink, counted in the metrics; the sink is handed back for the
/// request's end.
fn finish(
    service: &Service,
    request: &Request,
    (forward, run, mut sink): (
        Box<Forward>,
        Result<Box<dyn ScriptRun>, Failure>,
        RecordSink,
    ),
    errors: &ErrorOutput,
    abort: &AbortHandle,
    started: Instant,
) -> (Outcome, RecordSink) {
    let outcome = service
        .engine
        .finish(request, forward, run, errors, abort, &mut sink);
    record(service, &outcome, started, request);
    (outcome, sink)
}

/// A short CGI-format response (head and text body), for answers given without the engine:
/// the engine's own text answer ([`front_end::text_answer`]) with `reason` as its phrase.
pub fn text_response(status: u16, reason: &str, text: &str) -> Bytes {
    let (mut head, body) = front_end::text_answer(status, text);
    head.reason = reason.to_string();
    let mut bytes = cgi_head_bytes(&head);
    bytes.extend_from_slice(&body);
    Bytes::from(bytes)
}

/// FCGI_STDERR records, one per line of the script's stderr, escaped and split as CGI mode logs
/// them: nginx writes each record into its error log as it is, so a raw newline or escape
/// sequence from a script would forge or garble lines there. No name in front: the web
/// server's log entry already names the request.
///
/// From a blocking thread each line waits for room in the writer's queue. From an async task,
/// which must never block, a line goes to the queue when there is room and is otherwise held,
/// in order, for [`StderrLines::flush`] (up to [`HELD_STDERR`] bytes: a page pouring out
/// stderr while the web server reads nothing loses lines rather than memory).
struct StderrLines {
    id: u16,
    out: mpsc::Sender<Frame>,
    /// Some line was sent or held, so FCGI_STDERR must be ended too.
    used: AtomicBool,
    /// The lines come from a blocking thread now.
    blocking: AtomicBool,
    held: Mutex<HeldLines>,
}

/// Bytes of stderr lines an async task holds while the writer's queue is full.
const HELD_STDERR: usize = 1024 * 1024;

#[derive(Default)]
struct HeldLines {
    frames: VecDeque<Frame>,
    bytes: usize,
    dropped: usize,
}

impl StderrLines {
    fn new(id: u16, out: mpsc::Sender<Frame>, blocking: bool) -> Arc<Self> {
        Arc::new(StderrLines {
            id,
            out,
            used: AtomicBool::new(false),
            blocking: AtomicBool::new(blocking),
            held: Mutex::new(HeldLines::default()),
        })
    }

    /// Where a [`StderrRelay`] hands its lines.
    fn sink(lines: &Arc<Self>) -> LineSink {
        let lines = Arc::clone(lines);
        Box::new(move |line: &[u8]| lines.line(line))
    }

    fn line(&self, line: &[u8]) {
        self.used.store(true, Ordering::SeqCst);
        let frame = Frame::Record(Outgoing::Stderr {
            id: self.id,
            content: Bytes::copy_from_slice(line),
        });
        if self.blocking.load(Ordering::SeqCst) {
            let _ = self.out.blocking_send(frame);
            return;
        }
        let mut held = self.lock_held();
        let frame = match held.frames.is_empty() {
            true => match self.out.try_send(frame) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(frame)) => frame,
            },
            false => frame,
        };
        if held.bytes + line.len() > HELD_STDERR {
            held.dropped += 1;
            return;
        }
        held.bytes += line.len();
        held.frames.push_back(frame);
    }

    /// Sends the lines held, in order (from the async task, before anything else it sends).
    async fn flush(&self) {
        loop {
            let frame = self.lock_held().frames.pop_front();
            let Some(frame) = frame else { break };
            if self.out.send(frame).await.is_err() {
                return;
            }
        }
        let mut held = self.lock_held();
        held.bytes = 0;
        if held.dropped > 0 {
            crate::front_end::log(format_args!(
                "request {}: {} stderr lines dropped while the web server read nothing",
                self.id, held.dropped
            ));
            held.dropped = 0;
        }
    }

    /// Whether the lines come from a blocking thread from now on (after
    /// [`StderrLines::flush`]), or from the async task again.
    fn set_blocking(&self, blocking: bool) {
        self.blocking.store(blocking, Ordering::SeqCst);
    }

    fn used(&self) -> bool {
        self.used.load(Ordering::SeqCst)
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HeldLines> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's sink: CGI-format bytes (as CGI mode writes them) sent as FCGI_STDOUT.
struct RecordSink {
    id: u16,
    out: mpsc::Sender<Frame>,
    /// The head, held back so it leaves in one record with the first body bytes (or with
    /// END_REQUEST, for a 304).
    pending: BytesMut,
    abort: AbortHandle,
    /// Everything is held for the END frame, never sent from here: the engine runs on an
    /// async task, where nothing may block, with a response it has whole (bounded).
    hold: bool,
}

impl RecordSink {
    /// A sink for request `id`'s output to `out`, holding it all for the END frame when `hold`.
    fn new(id: u16, out: mpsc::Sender<Frame>, abort: AbortHandle, hold: bool) -> Self {
        RecordSink {
            id,
            out,
            pending: BytesMut::new(),
            abort,
            hold,
        }
    }

    fn check(&self) -> io::Result<()> {
        match self.abort.is_aborted() {
            true => Err(io::ErrorKind::ConnectionAborted.into()),
            false => Ok(()),
        }
    }

    /// The frame that ends the request: the rest of the output and END_REQUEST. Nothing
    /// more after an abort: the web server has given up on this response. A response cut
    /// short (the script failed or timed out after the head went out) gets no END_REQUEST at
    /// all: the connection is closed, so the web server cannot take the truncated body for a
    /// whole one.
    fn end(mut self, complete: bool, stderr_used: bool) -> Frame {
        let aborted = self.abort.is_aborted();
        if !complete && !aborted {
            return Frame::Cut;
        }
        let tail = match aborted {
            true => Bytes::new(),
            false => self.pending.split().freeze(),
        };
        Frame::End {
            id: self.id,
            tail,
            stderr_used,
            app_status: u32::from(!complete || aborted),
            protocol_status: REQUEST_COMPLETE,
        }
    }
}

impl ResponseSink for RecordSink {
    fn send_head(&mut self, head: &ResponseHead) -> io::Result<()> {
        self.check()?;
        self.pending.extend_from_slice(&cgi_head_bytes(head));
        Ok(())
    }

    fn send_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.check()?;
        if chunk.is_empty() {
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        if self.hold {
            return Ok(());
        }
        let content = self.pending.split().freeze();
        let record = Frame::Record(Outgoing::Stdout {
            id: self.id,
            content,
        });
        self.out
            .blocking_send(record)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.check()
    }

    /// Held whole for the END frame: one hand-off to the writer and one write to the web
    /// server for the whole response, instead of one for the body and one for its end.
    fn send_whole(&mut self, head: &ResponseHead, body: &[u8]) -> io::Result<()> {
        self.check()?;
        self.pending.extend_from_slice(&cgi_head_bytes(head));
        self.pending.extend_from_slice(body);
        Ok(())
    }
}

/// FCGI_STDIN as `Read`, fed by the connection through a bounded channel.
struct BodyReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    abort: AbortHandle,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                // The sender is dropped at the empty STDIN record, or when the connection
                // gives up on the request; only the first is a real end of the body.
                None if self.abort.is_aborted() => {
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// The request body for the engine: streamed to the script, or read and dropped.
struct StdinBody {
    reader: Option<BodyReader>,
}

impl RequestBody for StdinBody {
    fn discard(&mut self) -> io::Result<()> {
        match self.reader.as_mut() {
            Some(reader) => io::copy(reader, &mut io::sink()).map(drop),
            None => Ok(()),
        }
    }

    fn take_input(&mut self) -> Input {
        let Some(mut reader) = self.reader.take() else {
            return Input::Null;
        };
        if reader.current.is_empty() {
            match reader.rx.try_recv() {
                Ok(chunk) => reader.current = chunk,
                // The body has already ended, empty (every GET through nginx): the script
                // reads /dev/null, which spares a pipe and a feeder thread per request.
                Err(TryRecvError::Disconnected) if !reader.abort.is_aborted() => {
                    return Input::Null;
                }
                Err(_) => {}
            }
        }
        Input::Stream(Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame `sink` ends with, and that nothing went to the writer before it.
    fn only_frame(sink: RecordSink, frames: &mut mpsc::Receiver<Frame>) -> Frame {
        assert!(frames.try_recv().is_err(), "a frame sent before the end");
        sink.end(true, false)
    }

    fn assert_one_end(frame: Frame, expected: &[u8]) {
        match frame {
            Frame::End {
                id: 3,
                tail,
                app_status: 0,
                ..
            } => assert_eq!(tail, expected),
            other => panic!("not one END frame: {other:?}"),
        }
    }

    #[test]
    fn a_whole_response_goes_to_the_writer_as_one_end_frame() {
        let (out, mut frames) = mpsc::channel(8);
        let mut sink = RecordSink::new(3, out, AbortHandle::new(), false);
        let mut head = ResponseHead::new(200);
        head.push("Content-Length", "5");
        sink.send_whole(&head, b"hello").unwrap();
        let mut expected = cgi_head_bytes(&head);
        expected.extend_from_slice(b"hello");
        assert_one_end(only_frame(sink, &mut frames), &expected);
    }

    #[test]
    fn a_holding_sink_never_sends_before_its_end_even_in_pieces() {
        let (out, mut frames) = mpsc::channel(1);
        let mut sink = RecordSink::new(3, out, AbortHandle::new(), true);
        // A failure's text answer is sent head, then body: held too (a channel of one
        // would have blocked on the second piece).
        let head = ResponseHead::new(502);
        sink.send_head(&head).unwrap();
        sink.send_body(b"502 ").unwrap();
        sink.send_body(b"Bad Gateway\n").unwrap();
        sink.finish().unwrap();
        let mut expected = cgi_head_bytes(&head);
        expected.extend_from_slice(b"502 Bad Gateway\n");
        assert_one_end(only_frame(sink, &mut frames), &expected);
    }
}
