//! The floor of the nginx → FastCGI hop, for bench/fastcgi.sh: a responder that answers every
//! request with the same 304 head our responder sends, after reading the request's records,
//! on one tokio thread with kept connections. What nginx → it costs is what any responder
//! pays for the hop; what ours costs beyond it is our own work per request.
//!
//! Not shipped and not a test: `cargo build --release --example fastcgi_floor`, then
//! `fastcgi_floor /path/to.sock`.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The answer, as our responder words a declared 304 (ETag, Last-Modified, policy, Expires).
const HEAD: &[u8] = b"Status: 304 Not Modified\r\n\
ETag: \"1c2b3a4d5e6f7a8b\"\r\n\
Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
Cache-Control: private, max-age=0, must-revalidate\r\n\
Expires: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";

const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const KEEP_CONN: u8 = 1;

fn main() -> io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| io::Error::other("usage: fastcgi_floor SOCKET"))?;
    let _ = std::fs::remove_file(&path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = UnixListener::bind(&path)?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    })
}

/// Answers each request on `stream` once its FCGI_STDIN has ended.
async fn serve(mut stream: UnixStream) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut keep_conn = true;
    loop {
        // Whole records at the front of the buffer.
        while buffer.len() >= 8 {
            let content = usize::from(u16::from_be_bytes([buffer[4], buffer[5]]));
            let length = 8 + content + usize::from(buffer[6]);
            if buffer.len() < length {
                break;
            }
            let (kind, id) = (buffer[1], [buffer[2], buffer[3]]);
            if kind == BEGIN_REQUEST && content >= 3 {
                keep_conn = buffer[10] & KEEP_CONN != 0;
            }
            if kind == STDIN && content == 0 {
                stream.write_all(&answer(id)).await?;
                if !keep_conn {
                    return Ok(());
                }
            }
            buffer.drain(..length);
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
    }
}

/// STDOUT with the head, the empty STDOUT, END_REQUEST (complete), in one write.
fn answer(id: [u8; 2]) -> Vec<u8> {
    let record = |kind: u8, content: &[u8]| {
        let length = u16::try_from(content.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let mut bytes = vec![1, kind, id[0], id[1], length[0], length[1], 0, 0];
        bytes.extend_from_slice(content);
        bytes
    };
    let mut out = record(STDOUT, HEAD);
    out.extend(record(STDOUT, &[]));
    out.extend(record(END_REQUEST, &[0; 8]));
    out
}
