//! One connection from the web server: a reader that follows each request's records and a
//! writer that sends the responses, run side by side in the connection's task.
//!
//! The reader keeps reading while a script runs, so FCGI_ABORT_REQUEST, or the connection
//! closing (nginx closes rather than aborts when its client leaves), kills the script's
//! process group at once. One request at a time (FCGI_MPXS_CONNS=0: nginx never
//! multiplexes); a protocol error or a timeout ends this connection and nothing else.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::codec::{Pair, ParamsParser, ProtocolError, RecordCodec};
use super::request::{Frame, Started};
use super::{Service, Stop};
use crate::front_end::log;

/// Frames queued for the writer: each is at most one engine chunk (64 KiB) or one buffered
/// response, so this bounds a connection's output memory.
const OUTPUT_QUEUE: usize = 8;

/// Bytes of records gathered before the writer must flush. tokio-util's default (8 KiB) would
/// write a 15 KB page's STDOUT record and its END_REQUEST in two writes (two wake-ups of the
/// web server); a response up to this size leaves in one. It bounds the write buffer each
/// connection keeps, with one 64 KiB record on top.
const WRITE_BATCH: usize = 64 * 1024;

/// Where the connection is in its current request.
pub(super) enum State {
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
pub(super) enum Next {
    Continue,
    Close,
}

/// Serves one connection until it closes, fails, times out, or the responder stops.
pub async fn serve_connection<S>(stream: S, service: Arc<Service>, stop: watch::Receiver<Stop>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (out, frames) = mpsc::channel(OUTPUT_QUEUE);
    let write_timeout = service.limits.write_timeout;
    let abandon = CancellationToken::new();
    let reader = Reader {
        service,
        out,
        stop,
        abandon: abandon.clone(),
        state: State::Idle {
            since: Instant::now(),
            fresh: true,
        },
    };
    let records = FramedRead::new(read_half, RecordCodec::new());
    let mut writer = FramedWrite::new(write_half, RecordCodec::new());
    writer.set_backpressure_boundary(WRITE_BATCH);
    tokio::join!(
        reader.run(records),
        write_frames(writer, frames, write_timeout, abandon)
    );
}

/// Writes frames as they come, coalescing what is queued into one flush. Ends when every
/// sender is gone, at a [`Frame::Cut`] (after flushing what came before it and shutting the
/// connection's write side), at the first error or a write blocked past `limit` (the peer stopped
/// reading), or when the reader abandons the connection: dropping the receiver then fails
/// the engine's sends, which stops the script.
async fn write_frames<W>(
    mut sink: FramedWrite<W, RecordCodec>,
    mut frames: mpsc::Receiver<Frame>,
    limit: Duration,
    abandon: CancellationToken,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::select! {
            biased;
            () = abandon.cancelled() => return,
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let batch = async {
            let mut cut = feed(&mut sink, frame).await?;
            while !cut && let Ok(frame) = frames.try_recv() {
                cut = feed(&mut sink, frame).await?;
            }
            sink.flush().await.map(|()| cut)
        };
        let written = tokio::select! {
            biased;
            () = abandon.cancelled() => return,
            written = tokio::time::timeout(limit, batch) => written,
        };
        match written {
            Ok(Ok(false)) => {}
            // A response cut short: close without END_REQUEST (see `Frame::Cut`).
            Ok(Ok(true)) => break,
            // The peer went away (nginx's client left): routine, not worth a log line.
            Ok(Err(ProtocolError::Io(_))) => return,
            Ok(Err(e)) => {
                log(format_args!("cannot send a record: {e}"));
                return;
            }
            Err(_) => {
                log(format_args!("the web server stopped reading for {limit:?}"));
                return;
            }
        }
    }
    let _ = tokio::time::timeout(limit, sink.close()).await;
}

/// Feeds one frame's records to the writer; true for [`Frame::Cut`], after which nothing
/// more is written on this connection.
async fn feed<W>(
    sink: &mut FramedWrite<W, RecordCodec>,
    frame: Frame,
) -> Result<bool, ProtocolError>
where
    W: AsyncWrite + Unpin,
{
    if let Frame::Cut = frame {
        return Ok(true);
    }
    for record in frame.into_records() {
        sink.feed(record).await?;
    }
    Ok(false)
}

/// The reading side of a connection, which owns its state.
pub(super) struct Reader {
    pub(super) service: Arc<Service>,
    /// Frames for the writer; the engine's sink holds clones.
    pub(super) out: mpsc::Sender<Frame>,
    pub(super) stop: watch::Receiver<Stop>,
    pub(super) state: State,
    /// Tells the writer to give up: the peer is gone, or scripts are being killed.
    abandon: CancellationToken,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut records: FramedRead<R, RecordCodec>) {
        loop {
            let idle = matches!(self.state, State::Idle { .. });
            if idle && *self.stop.borrow() != Stop::Running {
                break;
            }
            let deadline = self.deadline();
            let next = tokio::select! {
                biased;
                () = self.out.closed() => Next::Close,
                done = task_done(&mut self.state) => self.on_done(done),
                () = must_close(&mut self.stop, idle) => Next::Close,
                record = read_until(deadline, records.next()) => match record {
                    Some(Some(Ok(record))) => self.on_record(record).await,
                    // A reset is how nginx often leaves when its client did: routine.
                    Some(Some(Err(ProtocolError::Io(_)))) | Some(None) => Next::Close,
                    Some(Some(Err(e))) => {
                        log(format_args!("closing a connection: {e}"));
                        Next::Close
                    }
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
        if let State::Running { mut started, .. } = std::mem::replace(&mut self.state, idle_now()) {
            started.abort.abort();
            // Nothing more is sent for it: a writer blocked on a peer that does not read must
            // not hold the engine (and so this connection) until the write timeout.
            self.abandon.cancel();
            started.stdin = None;
            if let Err(e) = (&mut started.task).await {
                log(format_args!("a request's task failed: {e}"));
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
        log(format_args!(
            "closing a connection: timed out waiting for {what}"
        ));
    }

    /// The engine finished the request (END_REQUEST is queued).
    pub(super) fn on_done(&mut self, done: Result<(), JoinError>) -> Next {
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
            log(format_args!("request {id} failed: {e}"));
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
    pub(super) fn request_over(&mut self, keep_conn: bool) -> Next {
        self.state = idle_now();
        match keep_conn && *self.stop.borrow() == Stop::Running {
            true => Next::Continue,
            false => Next::Close,
        }
    }
}

pub(super) fn idle_now() -> State {
    State::Idle {
        since: Instant::now(),
        fresh: false,
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
pub(super) async fn stopped(stop: &mut watch::Receiver<Stop>) {
    if stop
        .wait_for(|phase| *phase != Stop::Running)
        .await
        .is_err()
    {
        // The sender is gone without a stop: never.
        std::future::pending::<()>().await;
    }
}

/// Resolves when the stop reaches this connection: at once when idle, only when scripts are
/// being killed while a request is in flight.
async fn must_close(stop: &mut watch::Receiver<Stop>, idle: bool) {
    let limit = if idle { Stop::Draining } else { Stop::Killing };
    if stop.wait_for(|phase| *phase >= limit).await.is_err() {
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
