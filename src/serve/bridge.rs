//! Between the engine's blocking world and hyper's async one: a `ResponseSink` whose head and
//! body chunks travel through channels into a streaming hyper body. Bounded channels keep
//! memory flat whatever the body size: a slow client makes the engine wait (up to
//! [`SEND_TIMEOUT`]). The request body does not come this way: [`super::upload`] reads it in
//! full first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::backend::AbortHandle;
use crate::response::{ResponseHead, ResponseSink};

/// Response chunks in flight between the two sides, per request.
const CHANNEL_CHUNKS: usize = 4;
/// A client that reads nothing of its response for this long is treated as gone (nginx's
/// `send_timeout` default), so a stalled reader cannot hold a script forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The engine's side of a response.
pub struct ChannelSink {
    head: Option<oneshot::Sender<ResponseHead>>,
    body: Option<mpsc::Sender<io::Result<Bytes>>>,
    /// Set by [`ChannelSink::complete`]; the body ends cleanly only when it is set.
    complete: Arc<AtomicBool>,
    runtime: Handle,
}

/// The async side of a response: the head when it comes, then the body.
pub struct Pending {
    /// Resolves with the head; an error means the engine ended without sending one.
    pub head: oneshot::Receiver<ResponseHead>,
    /// The body chunks.
    pub body: mpsc::Receiver<io::Result<Bytes>>,
    /// Whether the engine completed the response; read when the chunks end.
    pub complete: Arc<AtomicBool>,
}

/// A connected sink and its async counterpart.
pub fn response_channel(runtime: Handle) -> (ChannelSink, Pending) {
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let complete = Arc::new(AtomicBool::new(false));
    let sink = ChannelSink {
        head: Some(head_tx),
        body: Some(body_tx),
        complete: Arc::clone(&complete),
        runtime,
    };
    let pending = Pending {
        head: head_rx,
        body: body_rx,
        complete,
    };
    (sink, pending)
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client closed the connection",
    )
}

impl ChannelSink {
    /// Marks the response complete (the engine's `Outcome.complete`). Without it, the body
    /// ends in an error when the sink is dropped, however full the channel was, so hyper
    /// aborts the connection instead of ending the response cleanly: the client must not take
    /// a cut-short body for a whole one.
    pub fn complete(&mut self) {
        self.complete.store(true, Ordering::SeqCst);
    }

    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        let tx = self.body.as_ref().ok_or_else(gone)?;
        let item = match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(gone()),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let sent = self
            .runtime
            .block_on(tokio::time::timeout(SEND_TIMEOUT, tx.send(item)));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for 60 s",
            )),
        }
    }
}

impl ResponseSink for ChannelSink {
    fn send_head(&mut self, head: &ResponseHead) -> io::Result<()> {
        let tx = self
            .head
            .take()
            .ok_or_else(|| io::Error::other("head sent twice"))?;
        tx.send(head.clone()).map_err(|_| gone())
    }

    fn send_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.send(Ok(Bytes::copy_from_slice(chunk)))
    }

    fn finish(&mut self) -> io::Result<()> {
        // The body ends when the sink is dropped, after the engine has said whether the
        // response is complete (see `complete`).
        Ok(())
    }
}

/// The hyper response body: chunks from the engine. Dropped before its end (the client left
/// or hyper gave up on the connection), it kills the script through the abort handle.
pub struct ResponseBody {
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
    /// Set when the engine completed the response; checked when `rx` ends.
    complete: Arc<AtomicBool>,
    fixed: Option<Bytes>,
    abort: Option<AbortHandle>,
}

impl ResponseBody {
    /// The body the engine streams; `abort` fires if it is dropped unfinished. It ends
    /// cleanly only if `complete` is set by then.
    pub fn streamed(
        rx: mpsc::Receiver<io::Result<Bytes>>,
        complete: Arc<AtomicBool>,
        abort: AbortHandle,
    ) -> Self {
        ResponseBody {
            rx: Some(rx),
            complete,
            fixed: None,
            abort: Some(abort),
        }
    }

    /// A body known in full (refusals, internal errors).
    pub fn fixed(bytes: impl Into<Bytes>) -> Self {
        ResponseBody {
            rx: None,
            complete: Arc::new(AtomicBool::new(true)),
            fixed: Some(bytes.into()),
            abort: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(bytes) = self.fixed.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(e))) => {
                self.rx = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                // Every sender is gone: the engine has finished with this request. The flag
                // was set (or not) before the sink was dropped.
                self.rx = None;
                self.abort = None;
                match self.complete.load(Ordering::SeqCst) {
                    true => Poll::Ready(None),
                    false => Poll::Ready(Some(Err(io::Error::other("the response was cut short")))),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none() && self.fixed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.fixed, &self.rx) {
            (Some(bytes), _) => SizeHint::with_exact(bytes.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            (None, Some(_)) => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }
}

/// Kills the script if the request is dropped before its response starts (the client left
/// while the script was still working on its head).
pub struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    /// Arms the guard.
    pub fn new(abort: AbortHandle) -> Self {
        AbortOnDrop(Some(abort))
    }

    /// The response has started; its body takes over the duty.
    pub fn disarm(mut self) -> AbortHandle {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(abort) = self.0.take() {
            abort.abort();
        }
    }
}
