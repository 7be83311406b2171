//! A FastCGI request on a kept connection, exchanged on the front end's own async task: no
//! blocking thread is woken for it, and none wakes the front end back. Only a request known
//! whole before it goes (a GET or HEAD without a body, see `FastCgiBackend::prefetch`).
//!
//! The response is gathered up to [`BUFFER_LIMIT`], which is all the engine buffers, and then
//! replayed to the engine as a [`ScriptRun`]. A response longer than that, or a kept connection
//! that failed before any answer (to be retried on a new one), is handed over to the blocking
//! client with the connection as it stands: the engine then finishes on a blocking thread, as
//! for any request, and a streaming page keeps streaming.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::fastcgi_client::{
    Handover, REQUEST_ID, Ready, Stream, TICK, cut_short, ended_from, resume,
};
use super::{AbortHandle, Ended, ErrorOutput, RunError, ScriptRun};
use crate::delivery::BUFFER_LIMIT;
use crate::fastcgi_protocol::{
    ABORT_REQUEST, END_REQUEST, REQUEST_COMPLETE, STDERR, STDOUT, encode_stream, parse_end_request,
    take_record,
};

/// A request a backend has made ready to run without blocking ([`super::Backend::prefetch`]):
/// the front end runs it with [`Prefetch::fetch`] on its own task.
pub struct Prefetch {
    ready: Ready,
    stream: Stream,
}

/// What [`Prefetch::fetch`] got.
pub struct Fetched {
    /// The response, as the engine reads a run.
    pub run: Box<dyn ScriptRun>,
    /// The run needs no more I/O: its whole output (or its failure) is in hand, at most
    /// [`BUFFER_LIMIT`] bytes, so the engine can finish it without blocking. Otherwise it
    /// reads on from the connection and must finish on a blocking thread.
    pub whole: bool,
}

impl Prefetch {
    pub(super) fn new(ready: Ready, stream: Stream) -> Self {
        Prefetch { ready, stream }
    }

    /// Sends the request and reads its response until FCGI_END_REQUEST, the bound, the
    /// deadline (the run then fails as timed out) or `abort` (FCGI_ABORT_REQUEST goes to the
    /// upstream, and the run fails as aborted). FCGI_STDERR goes to `errors` as it comes.
    pub async fn fetch(self, errors: &ErrorOutput, abort: &AbortHandle) -> Fetched {
        let aborted = Arc::new(Notify::new());
        let wake = Arc::clone(&aborted);
        // `notify_one` keeps its permit when nobody waits yet: an abort is never missed.
        abort.on_abort(Some(Box::new(move || wake.notify_one())));
        let pool = Arc::clone(&self.ready.pool);
        let fetched = if abort.is_aborted() {
            failed(BytesMut::new(), RunError::Aborted)
        } else {
            exchange(self.ready, self.stream, errors, abort, &aborted).await
        };
        abort.on_abort(None);
        let counter = match fetched.whole {
            true => &pool.on_task,
            false => &pool.handed_over,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        fetched
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
    stream: Stream,
    errors: &ErrorOutput,
    abort: &AbortHandle,
    aborted: &Notify,
) -> Fetched {
    let mut gathered = BytesMut::new();
    let mut inbuf = BytesMut::new();
    let Ok(mut stream) = AsyncStream::from_std(stream) else {
        // The connection is lost to us: the request goes again on a new one.
        return handed_over(gathered, ready, None, inbuf, false, errors, abort);
    };
    let deadline = tokio::time::Instant::from_std(ready.deadline);
    let mut answered = false;
    let mut event = until(
        async { stream.write_all(&ready.head).await.map(|()| 1) },
        aborted,
        deadline,
    )
    .await;
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
                if !answered {
                    return handed_over(gathered, ready, None, inbuf, false, errors, abort);
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
                        && let Ok(kept) = stream.into_std()
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
                let stream = stream.into_std().ok();
                return handed_over(gathered, ready, stream, inbuf, true, errors, abort);
            }
        }
        inbuf.reserve(READ_CHUNK);
        event = until(stream.read_buf(&mut inbuf), aborted, deadline).await;
    }
}

fn replay(gathered: BytesMut, then: Then, whole: bool) -> Fetched {
    Fetched {
        run: Box::new(Replay {
            gathered: gathered.freeze(),
            then,
        }),
        whole,
    }
}

fn failed(gathered: BytesMut, error: RunError) -> Fetched {
    replay(gathered, Then::Failed(Some(error)), true)
}

fn handed_over(
    gathered: BytesMut,
    ready: Ready,
    stream: Option<Stream>,
    inbuf: BytesMut,
    answered: bool,
    errors: &ErrorOutput,
    abort: &AbortHandle,
) -> Fetched {
    let handover = Handover {
        ready,
        stream,
        inbuf,
        answered,
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
        let Fetched { mut run, whole } = replay(body, Then::Ended(Ended::Success), true);
        assert!(whole);
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
        let Fetched { mut run, .. } = failed(BytesMut::from(&b"partial"[..]), RunError::Timeout);
        let (out, end) = read_all(run.as_mut());
        assert_eq!(out, b"partial");
        assert!(matches!(end, Err(RunError::Timeout)));
        assert_eq!(run.read(&mut [0u8; 4]).unwrap(), 0);
        assert!(matches!(run.wait(), Ok(Ended::Failed(_))));
    }
}
