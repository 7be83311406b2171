//! A FastCGI request exchanged on the front end's own async task: no blocking thread is woken
//! for it, and none wakes the front end back. Only a request known whole before it goes (a
//! GET or HEAD without a body, see `FastCgiBackend::prefetch`). It takes the pool's slot and
//! a kept connection, or opens one, as the blocking client does (`--max-children`,
//! `--upstream-keep`, closing rather than keeping while others wait on new connections).
//!
//! The response is gathered up to [`BUFFER_LIMIT`], which is all the engine buffers, and then
//! replayed to the engine as a [`ScriptRun`]. A response longer than that, or a kept connection
//! that failed before any answer (to be retried on a new one), is handed over to the blocking
//! client with the connection as it stands: the engine then finishes on a blocking thread, as
//! for any request, and a streaming page keeps streaming.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::fastcgi_client::{
    Address, CONNECT_RETRY, CONNECT_TIMEOUT, Handover, Pool, REQUEST_ID, Ready, Stream, TICK,
    Unconnected, WaitingOnNew, cut_short, ended_from, resume,
};
use super::{AbortHandle, Ended, ErrorOutput, RunError, ScriptRun};
use crate::delivery::BUFFER_LIMIT;
use crate::failure::Failure;
use crate::fastcgi_protocol::{
    ABORT_REQUEST, END_REQUEST, REQUEST_COMPLETE, STDERR, STDOUT, encode_stream, parse_end_request,
    take_record,
};

/// A request a backend has made ready to run without blocking ([`super::Backend::prefetch`]):
/// the front end runs it with [`Prefetch::fetch`] on its own task.
pub struct Prefetch {
    pool: Arc<Pool>,
    /// BEGIN_REQUEST, the params and the empty FCGI_STDIN.
    head: Bytes,
    deadline: Instant,
    script: String,
    timeout: Duration,
}

/// What [`Prefetch::fetch`] got.
pub struct Fetched {
    /// The response, as the engine reads a run; or why the request could not be sent (no
    /// slot in time, the upstream unreachable), as the engine's failure.
    pub run: Result<Box<dyn ScriptRun>, Failure>,
    /// The run needs no more I/O: its whole output (or its failure) is in hand, at most
    /// [`BUFFER_LIMIT`] bytes, so the engine can finish it without blocking. Otherwise it
    /// reads on from the connection and must finish on a blocking thread.
    pub whole: bool,
}

/// The connection a request goes on.
enum Connection {
    /// Kept from an earlier request: if it fails before any answer, the request is sent
    /// again on a new one.
    Kept(Stream),
    /// Opened for this request, which counts as waiting on a new connection until answered.
    New(AsyncStream, WaitingOnNew),
}

impl Prefetch {
    pub(super) fn new(
        pool: Arc<Pool>,
        head: Bytes,
        deadline: Instant,
        script: String,
        timeout: Duration,
    ) -> Self {
        Prefetch {
            pool,
            head,
            deadline,
            script,
            timeout,
        }
    }

    /// Takes a slot of the pool (`--max-children`) and a kept connection or a new one, sends
    /// the request and reads its response until FCGI_END_REQUEST, the bound, the deadline
    /// (the run then fails as timed out) or `abort` (FCGI_ABORT_REQUEST goes to the upstream,
    /// and the run fails as aborted). FCGI_STDERR goes to `errors` as it comes.
    pub async fn fetch(self, errors: &ErrorOutput, abort: &AbortHandle) -> Fetched {
        let aborted = Arc::new(Notify::new());
        let wake = Arc::clone(&aborted);
        // `notify_one` keeps its permit when nobody waits yet: an abort is never missed.
        abort.on_abort(Some(Box::new(move || wake.notify_one())));
        let pool = Arc::clone(&self.pool);
        let fetched = match self.connect(abort, &aborted).await {
            Ok((ready, connection)) => exchange(ready, connection, errors, abort, &aborted).await,
            Err(failure) => Fetched {
                run: Err(failure),
                whole: true,
            },
        };
        abort.on_abort(None);
        let counter = match fetched.whole {
            true => &pool.on_task,
            false => &pool.handed_over,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        fetched
    }

    /// A slot, then a kept connection or a new one, as the blocking client takes them.
    async fn connect(
        self,
        abort: &AbortHandle,
        aborted: &Notify,
    ) -> Result<(Ready, Connection), Failure> {
        let gone = || Failure::Io(io::ErrorKind::ConnectionAborted.into());
        let slot = tokio::select! {
            biased;
            () = aborted.notified() => return Err(gone()),
            slot = self.pool.in_use.acquire_async() => slot?,
        };
        if abort.is_aborted() {
            return Err(gone());
        }
        let ready = Ready {
            pool: self.pool,
            head: self.head,
            deadline: self.deadline,
            slot,
            script: self.script,
            timeout: self.timeout,
        };
        if let Some(kept) = ready.pool.take_idle() {
            return Ok((ready, Connection::Kept(kept)));
        }
        // Counted before connecting, so a connection finishing meanwhile is closed for us.
        let waiting = WaitingOnNew::new(&ready.pool);
        let limit = ready.deadline.min(Instant::now() + CONNECT_TIMEOUT);
        match connect(&ready.pool.address, limit.into(), aborted).await {
            Ok(stream) => {
                ready.pool.note_opened();
                Ok((ready, Connection::New(stream, waiting)))
            }
            Err(e) => Err(ready.pool.unconnected(e, &ready.script)),
        }
    }
}

/// A new connection within `limit`. A unix socket whose listen queue is full (every worker
/// busy, the queue filled) is tried again and again until `limit`, as the blocking client does.
async fn connect(
    address: &Address,
    limit: tokio::time::Instant,
    aborted: &Notify,
) -> Result<AsyncStream, Unconnected> {
    match address {
        Address::Unix(path) => loop {
            match tokio::net::UnixStream::connect(path).await {
                Ok(stream) => return Ok(AsyncStream::Unix(stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Unconnected::Unreachable(e)),
            }
            if tokio::time::Instant::now() >= limit {
                return Err(Unconnected::Busy("its listen queue stayed full".into()));
            }
            tokio::select! {
                biased;
                () = aborted.notified() => return Err(Unconnected::Aborted),
                () = tokio::time::sleep(CONNECT_RETRY) => {}
            }
        },
        Address::Tcp(target) => {
            let addr: SocketAddr = target
                .parse()
                .map_err(|_| Unconnected::Unreachable(io::ErrorKind::InvalidInput.into()))?;
            let connecting = tokio::time::timeout_at(limit, tokio::net::TcpStream::connect(addr));
            let stream = tokio::select! {
                biased;
                () = aborted.notified() => return Err(Unconnected::Aborted),
                connected = connecting => match connected {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(Unconnected::Unreachable(e)),
                    Err(_) => return Err(Unconnected::Busy("connecting took too long".into())),
                },
            };
            let _ = stream.set_nodelay(true);
            Ok(AsyncStream::Tcp(stream))
        }
    }
}

/// A kept connection on the runtime's reactor.
enum AsyncStream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncStream {
    fn from_std(stream: Stream) -> io::Result<AsyncStream> {
        Ok(match stream {
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                AsyncStream::Unix(tokio::net::UnixStream::from_std(s)?)
            }
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                AsyncStream::Tcp(tokio::net::TcpStream::from_std(s)?)
            }
        })
    }

    /// Back to a blocking socket (its read and write timeouts are still set), for the pool or
    /// a blocking run.
    fn into_std(self) -> io::Result<Stream> {
        Ok(match self {
            AsyncStream::Unix(s) => {
                let s = s.into_std()?;
                s.set_nonblocking(false)?;
                Stream::Unix(s)
            }
            AsyncStream::Tcp(s) => {
                let s = s.into_std()?;
                s.set_nonblocking(false)?;
                Stream::Tcp(s)
            }
        })
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            AsyncStream::Unix(s) => s.write_all(data).await,
            AsyncStream::Tcp(s) => s.write_all(data).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            AsyncStream::Unix(s) => s.read_buf(buf).await,
            AsyncStream::Tcp(s) => s.read_buf(buf).await,
        }
    }

    /// FCGI_ABORT_REQUEST, given a moment to go out; the connection is closed after it, as
    /// the blocking client does.
    async fn send_abort(mut self) {
        let mut record = BytesMut::new();
        encode_stream(ABORT_REQUEST, REQUEST_ID, &[], &mut record);
        let _ = tokio::time::timeout(TICK * 4, self.write_all(&record)).await;
    }
}

/// What ended a wait on the upstream.
enum Event {
    Done(io::Result<usize>),
    Aborted,
    Timeout,
}

/// Waits for `io`, the abort or the deadline, whichever comes first.
async fn until<F>(io: F, aborted: &Notify, deadline: tokio::time::Instant) -> Event
where
    F: Future<Output = io::Result<usize>>,
{
    tokio::select! {
        biased;
        () = aborted.notified() => Event::Aborted,
        () = tokio::time::sleep_until(deadline) => Event::Timeout,
        done = io => Event::Done(done),
    }
}

/// Bytes one read of the upstream may take: a page of some tens of KB in one system call.
const READ_CHUNK: usize = 64 * 1024;

async fn exchange(
    ready: Ready,
    connection: Connection,
    errors: &ErrorOutput,
    abort: &AbortHandle,
    aborted: &Notify,
) -> Fetched {
    let gathered = BytesMut::new();
    let mut inbuf = BytesMut::new();
    let (mut stream, mut waiting, reused) = match connection {
        Connection::Kept(kept) => match AsyncStream::from_std(kept) {
            Ok(stream) => (stream, None, true),
            // The connection is lost to us: the request goes again on a new one.
            Err(_) => return handed_over(gathered, ready, None, inbuf, false, true, errors, abort),
        },
        Connection::New(stream, waiting) => (stream, Some(waiting), false),
    };
    let mut gathered = gathered;
    let deadline = tokio::time::Instant::from_std(ready.deadline);
    let mut answered = false;
    let event = until(
        async { stream.write_all(&ready.head).await.map(|()| 1) },
        aborted,
        deadline,
    )
    .await;
    let mut event = match event {
        // A new connection that takes no request: the upstream's failure, as the blocking
        // client answers it (a kept one is retried below).
        Event::Done(Err(e)) if !reused => {
            let failure = Failure::UpstreamUnreachable {
                address: ready.pool.label.clone(),
                reason: e.to_string(),
            };
            return Fetched {
                run: Err(failure),
                whole: true,
            };
        }
        event => event,
    };
    loop {
        match event {
            Event::Done(Ok(n)) if n > 0 => {}
            Event::Done(result) => {
                let reason = match result {
                    Ok(_) => "the upstream closed the connection".to_string(),
                    Err(e) => e.to_string(),
                };
                // A kept connection the upstream closed meanwhile (php-fpm recycling its
                // worker): the blocking client sends the request once more on a new one.
                if !answered && reused {
                    return handed_over(gathered, ready, None, inbuf, false, true, errors, abort);
                }
                return failed(gathered, cut_short(&ready.pool.label, &reason));
            }
            Event::Aborted => {
                stream.send_abort().await;
                return failed(gathered, RunError::Aborted);
            }
            Event::Timeout => {
                stream.send_abort().await;
                return failed(gathered, RunError::Timeout);
            }
        }
        loop {
            let record = match take_record(&mut inbuf) {
                Ok(record) => record,
                Err(e) => {
                    let error = io::Error::new(io::ErrorKind::InvalidData, e);
                    return failed(gathered, RunError::Io(error));
                }
            };
            let Some((record_type, id, content)) = record else {
                break;
            };
            if id != REQUEST_ID {
                continue;
            }
            answered = true;
            drop(waiting.take());
            match record_type {
                STDOUT => gathered.extend_from_slice(&content),
                STDERR if !content.is_empty() => errors.write(&content),
                END_REQUEST => {
                    // A malformed end record still ends the request, as a failure.
                    let (app, protocol) =
                        parse_end_request(&content).unwrap_or((u32::MAX, REQUEST_COMPLETE));
                    let ended = ended_from(app, protocol);
                    if ended == Ended::Success
                        && inbuf.is_empty()
                        && ready.pool.wants_one()
                        && let Ok(kept) = stream.into_std()
                        && (reused || kept.set_timeouts(Some(TICK)).is_ok())
                    {
                        ready.pool.check_in(kept);
                    }
                    // Only now, with the connection kept or closed, is the slot released.
                    drop(ready);
                    return replay(gathered, Then::Ended(ended), true);
                }
                _ => {}
            }
            if gathered.len() > BUFFER_LIMIT {
                // More than the engine buffers: the rest streams from a blocking run.
                let stream = stream
                    .into_std()
                    .ok()
                    .filter(|s| reused || s.set_timeouts(Some(TICK)).is_ok());
                drop(waiting);
                return handed_over(gathered, ready, stream, inbuf, true, reused, errors, abort);
            }
        }
        inbuf.reserve(READ_CHUNK);
        event = until(stream.read_buf(&mut inbuf), aborted, deadline).await;
    }
}

fn replay(gathered: BytesMut, then: Then, whole: bool) -> Fetched {
    Fetched {
        run: Ok(Box::new(Replay {
            gathered: gathered.freeze(),
            then,
        })),
        whole,
    }
}

fn failed(gathered: BytesMut, error: RunError) -> Fetched {
    replay(gathered, Then::Failed(Some(error)), true)
}

#[allow(clippy::too_many_arguments)]
fn handed_over(
    gathered: BytesMut,
    ready: Ready,
    stream: Option<Stream>,
    inbuf: BytesMut,
    answered: bool,
    reused: bool,
    errors: &ErrorOutput,
    abort: &AbortHandle,
) -> Fetched {
    let handover = Handover {
        ready,
        stream,
        inbuf,
        answered,
        reused,
    };
    let live = resume(handover, errors, abort);
    replay(gathered, Then::Live(Box::new(live)), false)
}

/// The gathered output, then how the run went on.
struct Replay {
    gathered: Bytes,
    then: Then,
}

enum Then {
    /// The request ended so.
    Ended(Ended),
    /// The exchange failed so (given once).
    Failed(Option<RunError>),
    /// It goes on, on a blocking run.
    Live(Box<dyn ScriptRun>),
}

impl ScriptRun for Replay {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, RunError> {
        if !self.gathered.is_empty() {
            let n = buf.len().min(self.gathered.len());
            buf[..n].copy_from_slice(&self.gathered[..n]);
            bytes::Buf::advance(&mut self.gathered, n);
            return Ok(n);
        }
        match &mut self.then {
            Then::Ended(_) => Ok(0),
            Then::Failed(error) => error.take().map_or(Ok(0), Err),
            Then::Live(run) => run.read(buf),
        }
    }

    fn wait(&mut self) -> Result<Ended, RunError> {
        match &mut self.then {
            Then::Ended(ended) => Ok(ended.clone()),
            Then::Failed(error) => match error.take() {
                Some(error) => Err(error),
                None => Ok(Ended::Failed("the request was stopped".into())),
            },
            Then::Live(run) => run.wait(),
        }
    }

    fn kill(&mut self) {
        // An ended or failed exchange has nothing left at the upstream to stop.
        if let Then::Live(run) = &mut self.then {
            run.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(run: &mut dyn ScriptRun) -> (Vec<u8>, Result<(), RunError>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match run.read(&mut buf) {
                Ok(0) => return (out, Ok(())),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn a_whole_response_is_replayed_byte_for_byte_then_its_end() {
        let body = BytesMut::from(&b"Status: 200 OK\r\n\r\nhello, world"[..]);
        let Fetched { run, whole } = replay(body, Then::Ended(Ended::Success), true);
        assert!(whole);
        let mut run = run.ok().unwrap();
        let (out, end) = read_all(run.as_mut());
        assert_eq!(out, b"Status: 200 OK\r\n\r\nhello, world");
        assert!(end.is_ok());
        assert_eq!(run.wait().unwrap(), Ended::Success);
        assert_eq!(
            run.wait().unwrap(),
            Ended::Success,
            "a second wait answers the same"
        );
    }

    #[test]
    fn a_failed_exchange_gives_its_bytes_then_its_error_once() {
        let Fetched { run, .. } = failed(BytesMut::from(&b"partial"[..]), RunError::Timeout);
        let mut run = run.ok().unwrap();
        let (out, end) = read_all(run.as_mut());
        assert_eq!(out, b"partial");
        assert!(matches!(end, Err(RunError::Timeout)));
        assert_eq!(run.read(&mut [0u8; 4]).unwrap(), 0);
        assert!(matches!(run.wait(), Ok(Ended::Failed(_))));
    }
}
