//! The request body, read in full on the async side before the engine sees the request, as
//! nginx does in front of FastCGI (`fastcgi_request_buffering on`): a client that trickles
//! its upload, or stops sending it, costs a task and a connection, never a blocking thread.
//! The body goes to memory up to [`MEMORY_LIMIT`], past it to an unlinked temp file bounded by
//! the operator's limit (413 past it), so the script always gets a CONTENT_LENGTH (RFC 3875
//! §4.1.2), a chunked upload included.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::backend::Input;
use crate::engine::RequestBody;

/// Bodies up to this size stay in memory; larger ones go to a temp file. With the connection
/// cap this bounds upload memory (512 connections × 64 KiB = 32 MiB).
pub const MEMORY_LIMIT: usize = 64 * 1024;
/// However fast it trickles in, a body must be complete within this time: per-read silence is
/// the operator's `--body-timeout`, this stops a client that sends one byte just in time,
/// forever. Ten minutes is 170 KB/s for the default 100 MiB limit.
const BODY_DEADLINE: Duration = Duration::from_secs(600);

/// The limits a body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes (413 past it).
    pub max_size: u64,
    /// Longest silence between two reads (408 past it).
    pub read_timeout: Duration,
}

/// Why a body could not be read in full. Every variant ends the connection: the rest of the
/// body, if any, is still on the wire.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// RFC 9110 §15.5.14.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    /// RFC 9110 §15.5.9.
    #[error("the client sent nothing of its body for {0:?}")]
    Silent(Duration),
    /// RFC 9110 §15.5.9.
    #[error("the request body was not complete after {0:?}")]
    TooSlow(Duration),
    /// The client closed the connection or broke the framing (a bad chunk).
    #[error("the client broke off its upload: {0}")]
    Broken(hyper::Error),
    /// The temp file could not be written.
    #[error("cannot buffer the request body: {0}")]
    TempFile(io::Error),
}

impl UploadError {
    /// The status answered (when the client still listens).
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge(_) => 413,
            UploadError::Silent(_) | UploadError::TooSlow(_) => 408,
            UploadError::Broken(_) => 400,
            UploadError::TempFile(_) => 500,
        }
    }
}

/// A request body read in full, for the engine.
pub enum Upload {
    /// No body at all: the script gets `/dev/null` and no CONTENT_LENGTH.
    None,
    /// A body that fits in memory.
    Memory(Bytes),
    /// A larger body in an unlinked temp file, `len` bytes long.
    File { file: File, len: u64 },
}

impl Upload {
    /// CONTENT_LENGTH for the script: the bytes actually received, whatever framing carried
    /// them (Content-Length or chunked); `None` without a body.
    pub fn content_length(&self) -> Option<u64> {
        match self {
            Upload::None => None,
            Upload::Memory(bytes) => Some(bytes.len() as u64),
            Upload::File { len, .. } => Some(*len),
        }
    }
}

impl RequestBody for Upload {
    fn discard(&mut self) -> io::Result<()> {
        // Already off the wire: nothing to drain.
        *self = Upload::None;
        Ok(())
    }

    fn take_input(&mut self) -> Input {
        match std::mem::replace(self, Upload::None) {
            Upload::None => Input::Null,
            Upload::Memory(bytes) => Input::Stream(Box::new(Cursor::new(bytes))),
            Upload::File { file, .. } => Input::Stream(Box::new(file) as Box<dyn Read + Send>),
        }
    }
}

/// Reads `incoming` in full under `limits`. A declared Content-Length past the limit is
/// refused before a byte is read (and before hyper sends `100 Continue`).
pub async fn read(incoming: Incoming, limits: BodyLimits) -> Result<Upload, UploadError> {
    if incoming.is_end_stream() {
        return Ok(Upload::None);
    }
    if incoming.size_hint().lower() > limits.max_size {
        return Err(UploadError::TooLarge(limits.max_size));
    }
    tokio::time::timeout(BODY_DEADLINE, read_frames(incoming, limits))
        .await
        .unwrap_or(Err(UploadError::TooSlow(BODY_DEADLINE)))
}

async fn read_frames(mut incoming: Incoming, limits: BodyLimits) -> Result<Upload, UploadError> {
    let mut memory = BytesMut::new();
    let mut spill: Option<Spill> = None;
    let mut total: u64 = 0;
    loop {
        let deadline = Instant::now() + limits.read_timeout;
        let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => return Err(UploadError::Silent(limits.read_timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(UploadError::Broken(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing a CGI script could receive.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limits.max_size {
            return Err(UploadError::TooLarge(limits.max_size));
        }
        match &mut spill {
            Some(spill) => spill.write(data).await?,
            None if memory.len() + data.len() <= MEMORY_LIMIT => memory.extend_from_slice(&data),
            None => {
                let mut file = Spill::create().await?;
                file.write(memory.split().freeze()).await?;
                file.write(data).await?;
                spill = Some(file);
            }
        }
    }
    match spill {
        Some(spill) => spill.finish(total).await,
        None if total == 0 => Ok(Upload::Memory(Bytes::new())),
        None => Ok(Upload::Memory(memory.freeze())),
    }
}

/// The temp file a large body goes to. File calls run on the blocking pool (as tokio::fs
/// does): each is a short local write that never waits on the client.
struct Spill {
    file: Option<File>,
}

impl Spill {
    async fn create() -> Result<Spill, UploadError> {
        let file = blocking(create_unlinked).await?;
        Ok(Spill { file: Some(file) })
    }

    async fn write(&mut self, data: Bytes) -> Result<(), UploadError> {
        let mut file = self.file.take().ok_or_else(lost)?;
        let file = blocking(move || file.write_all(&data).map(|()| file)).await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self, len: u64) -> Result<Upload, UploadError> {
        let mut file = self.file.take().ok_or_else(lost)?;
        let file = blocking(move || file.rewind().map(|()| file)).await?;
        Ok(Upload::File { file, len })
    }
}

fn lost() -> UploadError {
    UploadError::TempFile(io::Error::other(
        "the temp file was lost after a failed write",
    ))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, UploadError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(UploadError::TempFile),
        Err(e) => Err(UploadError::TempFile(io::Error::other(e))),
    }
}

/// A file in the temp folder (`TMPDIR`), mode 0600, unlinked at once: the disk space goes
/// back when the request ends, whatever way it ends, and no other process can open it.
fn create_unlinked() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "http-conditional-upload-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
