//! One connection from the web server: a reader that follows each request's records and a
//! writer that sends the responses, run side by side in the connection's task.
//!
//! The reader keeps reading while a script runs, so FCGI_ABORT_REQUEST, or the connection
//! closing (nginx closes rather than aborts when its client leaves), kills the script's
//! process group at once. One request at a time (FCGI_MPXS_CONNS=0: nginx never
//! multiplexes); a protocol error or a timeout ends this connection and nothing else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::Service;
use super::codec::{
    CANT_MPX_CONN, Incoming, Outgoing, Pair, ParamsParser, ProtocolError, REQUEST_COMPLETE,
    RESPONDER, RecordCodec, UNKNOWN_ROLE,
};
use super::request::{self, Frame, Started};

/// Frames queued for the writer: each is at most one engine chunk (64 KiB) or one buffered
/// response, so this bounds a connection's output memory.
const OUTPUT_QUEUE: usize = 8;

/// Where the connection is in its current request.
enum State {
    /// Between requests. `fresh` until the first request (the header timeout applies).
    Idle { since: Instant, fresh: bool },
    /// BEGIN_REQUEST seen, FCGI_PARAMS arriving.
    Params {
        id: u16,
        keep_conn: bool,
        since: Instant,
        parser: ParamsParser,
        pairs: Vec<Pair>,
    },
    /// The engine has the request.
    Running {
        id: u16,
        keep_conn: bool,
        started: Started,
        /// The empty FCGI_STDIN record has not arrived yet.
        stdin_open: bool,
    },
    /// The response ended before the body did: the rest of FCGI_STDIN is dropped.
    Draining { id: u16, keep_conn: bool },
}

/// What to do after an event.
enum Next {
    Continue,
    Close,
}

/// Serves one connection until it closes, fails, times out, or the responder stops.
pub async fn serve_connection<S>(stream: S, service: Arc<Service>, stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (out, frames) = mpsc::channel(OUTPUT_QUEUE);
    let write_timeout = service.limits.write_timeout;
    let reader = Reader {
        service,
        out,
        stop,
        state: State::Idle {
            since: Instant::now(),
            fresh: true,
        },
    };
    let records = FramedRead::new(read_half, RecordCodec::new());
    let writer = FramedWrite::new(write_half, RecordCodec::new());
    tokio::join!(
        reader.run(records),
        write_frames(writer, frames, write_timeout)
    );
}

/// Writes frames as they come, coalescing what is queued into one flush. Ends when every
/// sender is gone, or at the first error or a write blocked past `limit` (the peer stopped
/// reading): dropping the receiver then fails the engine's sends, which stops the script.
async fn write_frames<W>(
    mut sink: FramedWrite<W, RecordCodec>,
    mut frames: mpsc::Receiver<Frame>,
    limit: Duration,
) where
    W: AsyncWrite + Unpin,
{
    while let Some(frame) = frames.recv().await {
        let batch = async {
            for record in frame.into_records() {
                sink.feed(record).await?;
            }
            while let Ok(frame) = frames.try_recv() {
                for record in frame.into_records() {
                    sink.feed(record).await?;
                }
            }
            sink.flush().await
        };
        match tokio::time::timeout(limit, batch).await {
            Ok(Ok(())) => {}
            // The peer went away (nginx's client left): routine, not worth a log line.
            Ok(Err(ProtocolError::Io(_))) => return,
            Ok(Err(e)) => {
                eprintln!("http-conditional: cannot send a record: {e}");
                return;
            }
            Err(_) => {
                eprintln!("http-conditional: the web server stopped reading for {limit:?}");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(limit, sink.close()).await;
}

struct Reader {
    service: Arc<Service>,
    out: mpsc::Sender<Frame>,
    stop: watch::Receiver<bool>,
    state: State,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut records: FramedRead<R, RecordCodec>) {
        loop {
            let idle = matches!(self.state, State::Idle { .. });
            if idle && *self.stop.borrow() {
                break;
            }
            let deadline = self.deadline();
            let next = tokio::select! {
                biased;
                () = self.out.closed() => Next::Close,
                done = task_done(&mut self.state) => self.on_done(done),
                () = stopped(&mut self.stop), if idle => Next::Close,
                record = read_until(deadline, records.next()) => match record {
                    Some(Some(Ok(record))) => self.on_record(record).await,
                    Some(Some(Err(e))) => {
                        eprintln!("http-conditional: closing a connection: {e}");
                        Next::Close
                    }
                    Some(None) => Next::Close,
                    None => {
                        self.log_timeout();
                        Next::Close
                    }
                },
            };
            if let Next::Close = next {
                break;
            }
        }
        // Closed mid-request: nginx closes instead of sending FCGI_ABORT_REQUEST when its
        // client leaves, so kill the script and wait for the engine to let go.
        if let State::Running { started, .. } = std::mem::replace(&mut self.state, idle_now()) {
            started.abort.abort();
            drop(started.stdin);
            if let Err(e) = started.task.await {
                eprintln!("http-conditional: a request's task failed: {e}");
            }
        }
    }

    /// When the wait for the next record gives up, by state.
    fn deadline(&self) -> Option<Instant> {
        let limits = &self.service.limits;
        match &self.state {
            State::Idle { since, fresh: true } => Some(*since + limits.header_timeout),
            State::Idle {
                since,
                fresh: false,
            } => Some(*since + limits.idle_timeout),
            State::Params { since, .. } => Some(*since + limits.header_timeout),
            State::Running {
                stdin_open: true, ..
            }
            | State::Draining { .. } => Some(Instant::now() + limits.body_timeout),
            // The request is all in: nothing is expected until the response is done.
            State::Running { .. } => None,
        }
    }

    fn log_timeout(&self) {
        let what = match &self.state {
            // An idle connection timing out is routine; nginx opens another.
            State::Idle { fresh: false, .. } => return,
            State::Idle { fresh: true, .. } => "a first request",
            State::Params { .. } => "the rest of FCGI_PARAMS",
            State::Running { .. } | State::Draining { .. } => "more of FCGI_STDIN",
        };
        eprintln!("http-conditional: closing a connection: timed out waiting for {what}");
    }

    /// The engine finished the request (END_REQUEST is queued).
    fn on_done(&mut self, done: Result<(), JoinError>) -> Next {
        let State::Running {
            id,
            keep_conn,
            stdin_open,
            ..
        } = std::mem::replace(&mut self.state, idle_now())
        else {
            return Next::Continue;
        };
        if let Err(e) = done {
            // A panic in the engine: what was sent for this request is unknown.
            eprintln!("http-conditional: request {id} failed: {e}");
            return Next::Close;
        }
        if stdin_open {
            self.state = State::Draining { id, keep_conn };
            return Next::Continue;
        }
        self.request_over(keep_conn)
    }

    /// Idle again, or closed when the web server asked for it (no FCGI_KEEP_CONN, §5.1) or
    /// the responder is stopping.
    fn request_over(&mut self, keep_conn: bool) -> Next {
        self.state = idle_now();
        match keep_conn && !*self.stop.borrow() {
            true => Next::Continue,
            false => Next::Close,
        }
    }

    async fn on_record(&mut self, record: Incoming) -> Next {
        match record {
            Incoming::BeginRequest {
                id,
                role,
                keep_conn,
            } => self.on_begin(id, role, keep_conn).await,
            Incoming::AbortRequest { id } => self.on_abort(id).await,
            Incoming::Params { id, content } => self.on_params(id, &content).await,
            Incoming::Stdin { id, content } => self.on_stdin(id, content).await,
            Incoming::GetValues { names } => {
                let pairs = self.values(names);
                self.send(Frame::Record(Outgoing::GetValuesResult { pairs }))
                    .await
            }
            Incoming::Unknown { record_type, id: 0 } => {
                self.send(Frame::Record(Outgoing::UnknownType { record_type }))
                    .await
            }
            // FCGI_DATA belongs to the filter role, which we refuse; records of types only
            // an application sends are not ours to answer.
            Incoming::Data { .. } | Incoming::Unknown { .. } => Next::Continue,
        }
    }

    async fn on_begin(&mut self, id: u16, role: u16, keep_conn: bool) -> Next {
        if let State::Draining { id: old, keep_conn } = self.state {
            // The previous body was never ended; the new request shows it never will be.
            if old != id && keep_conn {
                self.state = idle_now();
            }
        }
        match &self.state {
            State::Idle { .. } => {}
            State::Params { id: current, .. }
            | State::Running { id: current, .. }
            | State::Draining { id: current, .. } => {
                if *current == id {
                    eprintln!("http-conditional: closing a connection: request {id} began twice");
                    return Next::Close;
                }
                // FastCGI 1.0 §5.5: one request at a time on this connection.
                return self.send(end_request(id, 0, CANT_MPX_CONN)).await;
            }
        }
        if role != RESPONDER {
            // §5.5: only the responder role is served (no authorizer, no filter).
            if let Next::Close = self.send(end_request(id, 0, UNKNOWN_ROLE)).await {
                return Next::Close;
            }
            return self.request_over(keep_conn);
        }
        self.state = State::Params {
            id,
            keep_conn,
            since: Instant::now(),
            parser: ParamsParser::new(self.service.limits.params_bytes),
            pairs: Vec::new(),
        };
        Next::Continue
    }

    async fn on_abort(&mut self, id: u16) -> Next {
        match &mut self.state {
            State::Params {
                id: current,
                keep_conn,
                ..
            } if *current == id => {
                let keep_conn = *keep_conn;
                if let Next::Close = self.send(end_request(id, 0, REQUEST_COMPLETE)).await {
                    return Next::Close;
                }
                self.request_over(keep_conn)
            }
            State::Running {
                id: current,
                started,
                stdin_open,
                ..
            } if *current == id => {
                // The engine notices, stops, and queues END_REQUEST itself (§5.4).
                started.abort.abort();
                *stdin_open = false;
                drop(std::mem::replace(&mut started.stdin, closed_sender()));
                Next::Continue
            }
            State::Draining {
                id: current,
                keep_conn,
            } if *current == id => {
                // Its END_REQUEST is already out; the abort just ends the body early.
                let keep_conn = *keep_conn;
                self.request_over(keep_conn)
            }
            // An id with no request here: nothing to abort.
            _ => Next::Continue,
        }
    }

    async fn on_params(&mut self, id: u16, content: &[u8]) -> Next {
        let State::Params {
            id: current,
            parser,
            pairs,
            ..
        } = &mut self.state
        else {
            return self.stray(id, "FCGI_PARAMS");
        };
        if *current != id {
            return Next::Continue;
        }
        if !content.is_empty() {
            return match parser.feed(content) {
                Ok(more) => {
                    pairs.extend(more);
                    Next::Continue
                }
                Err(ProtocolError::ParamsTooLarge { limit }) => {
                    eprintln!("http-conditional: request {id}: params over {limit} bytes: 431");
                    let text = format!("request headers over the {limit}-byte limit\n");
                    let tail =
                        request::text_response(431, "Request Header Fields Too Large", &text);
                    let _ = self.send(end_with(id, tail)).await;
                    Next::Close
                }
                Err(e) => {
                    eprintln!("http-conditional: closing a connection: {e}");
                    Next::Close
                }
            };
        }
        // The empty record ends the params: the request can start.
        let State::Params {
            keep_conn,
            parser,
            pairs,
            ..
        } = std::mem::replace(&mut self.state, idle_now())
        else {
            return Next::Close;
        };
        if let Err(e) = parser.finish() {
            eprintln!("http-conditional: closing a connection: {e}");
            return Next::Close;
        }
        let started = request::start(&self.service, id, pairs, self.out.clone());
        self.state = State::Running {
            id,
            keep_conn,
            started,
            stdin_open: true,
        };
        Next::Continue
    }

    async fn on_stdin(&mut self, id: u16, content: Bytes) -> Next {
        match &mut self.state {
            State::Running {
                id: current,
                started,
                stdin_open,
                ..
            } if *current == id => {
                if !*stdin_open {
                    return Next::Continue;
                }
                if content.is_empty() {
                    *stdin_open = false;
                    // Dropping the sender is the script's end of input.
                    drop(std::mem::replace(&mut started.stdin, closed_sender()));
                    return Next::Continue;
                }
                // Back-pressure: wait while the script is not reading. If it never does, its
                // run ends (exit or timeout) and the send fails.
                tokio::select! {
                    sent = started.stdin.send(content) => {
                        if sent.is_err() {
                            // The script is done with its stdin; the rest is dropped.
                            started.stdin = closed_sender();
                        }
                        Next::Continue
                    }
                    () = self.out.closed() => Next::Close,
                }
            }
            State::Draining {
                id: current,
                keep_conn,
            } if *current == id => match content.is_empty() {
                true => {
                    let keep_conn = *keep_conn;
                    self.request_over(keep_conn)
                }
                false => Next::Continue,
            },
            State::Params { id: current, .. } if *current == id => {
                eprintln!(
                    "http-conditional: closing a connection: FCGI_STDIN before the end of FCGI_PARAMS"
                );
                Next::Close
            }
            _ => Next::Continue,
        }
    }

    /// A stream record for a request past that stream: ours is a protocol error, another
    /// id's is ignored (§3.3: records for inactive ids).
    fn stray(&self, id: u16, what: &str) -> Next {
        let current = match &self.state {
            State::Running { id, .. } | State::Draining { id, .. } => Some(*id),
            _ => None,
        };
        if current == Some(id) {
            eprintln!("http-conditional: closing a connection: {what} after its stream ended");
            return Next::Close;
        }
        Next::Continue
    }

    /// FCGI_GET_VALUES_RESULT (§4.1): the variables we know, once each; others left out.
    fn values(&self, names: Vec<Vec<u8>>) -> Vec<Pair> {
        let max = self.service.limits.max_connections.to_string();
        let mut pairs: Vec<Pair> = Vec::new();
        for name in names {
            let value = match name.as_slice() {
                b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => max.clone(),
                b"FCGI_MPXS_CONNS" => "0".to_string(),
                _ => continue,
            };
            if !pairs.iter().any(|(n, _)| *n == name) {
                pairs.push((name, value.into_bytes()));
            }
        }
        pairs
    }

    async fn send(&self, frame: Frame) -> Next {
        match self.out.send(frame).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close,
        }
    }
}

fn idle_now() -> State {
    State::Idle {
        since: Instant::now(),
        fresh: false,
    }
}

/// A sender whose receiver is gone: what `Running.stdin` holds once the body is over.
fn closed_sender() -> mpsc::Sender<Bytes> {
    mpsc::channel(1).0
}

fn end_request(id: u16, app_status: u32, protocol_status: u8) -> Frame {
    Frame::Record(Outgoing::EndRequest {
        id,
        app_status,
        protocol_status,
    })
}

fn end_with(id: u16, tail: Bytes) -> Frame {
    Frame::End {
        id,
        tail,
        stderr_used: false,
        app_status: 1,
        protocol_status: REQUEST_COMPLETE,
    }
}

/// Resolves when the running request's task ends; never otherwise.
async fn task_done(state: &mut State) -> Result<(), JoinError> {
    match state {
        State::Running { started, .. } => (&mut started.task).await,
        _ => std::future::pending().await,
    }
}

/// Resolves once the responder is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        // The sender is gone without a stop: never.
        std::future::pending::<()>().await;
    }
}

/// The next record, or `None` when `deadline` passes first.
async fn read_until<F: Future>(deadline: Option<Instant>, read: F) -> Option<F::Output> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, read).await.ok(),
        None => Some(read.await),
    }
}
