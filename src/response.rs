//! The response the engine produces, and how it is written as a CGI response (RFC 3875 §6).

use std::io::{self, IoSlice, Write};

use crate::failure::reason_phrase;

/// Status line and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order; repeats kept.
    pub headers: Vec<(String, Vec<u8>)>,
    /// A script's local redirect (RFC 3875 §6.2.2): `Location: /path` and no `Status`.
    pub local_redirect: bool,
}

impl ResponseHead {
    /// A head with the standard reason phrase and no headers.
    pub fn new(status: u16) -> Self {
        ResponseHead {
            status,
            reason: reason_phrase(status).to_string(),
            headers: Vec::new(),
            local_redirect: false,
        }
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.headers.push((name.to_string(), value.into()));
    }

    /// The first value of a header (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether a header is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes every header with one of these names.
    pub fn remove(&mut self, names: &[&str]) {
        self.headers
            .retain(|(n, _)| !names.iter().any(|name| n.eq_ignore_ascii_case(name)));
    }

    /// Adds tokens to Vary, merging with any Vary already present.
    pub fn add_vary(&mut self, tokens: &[&str]) {
        let mut merged: Vec<String> = Vec::new();
        for (_, value) in self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Vary"))
        {
            for token in String::from_utf8_lossy(value).split(',') {
                let token = token.trim();
                if !token.is_empty() && !merged.iter().any(|t| t.eq_ignore_ascii_case(token)) {
                    merged.push(token.to_string());
                }
            }
        }
        for token in tokens {
            if !merged.iter().any(|t| t.eq_ignore_ascii_case(token)) {
                merged.push((*token).to_string());
            }
        }
        self.remove(&["Vary"]);
        if !merged.is_empty() {
            self.push("Vary", merged.join(", "));
        }
    }
}

/// Where the engine writes its response; each front end provides one.
pub trait ResponseSink {
    /// Sends the status and headers; called once, before any body.
    fn send_head(&mut self, head: &ResponseHead) -> io::Result<()>;
    /// Sends a piece of the body.
    fn send_body(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Ends the response.
    fn finish(&mut self) -> io::Result<()>;
    /// Sends a whole response at once: its head, all of its body (empty for HEAD), its end.
    /// A sink that sends records can hold it all for one write, where a body sent in pieces
    /// must go out piece by piece (a page that streams slowly).
    fn send_whole(&mut self, head: &ResponseHead, body: &[u8]) -> io::Result<()> {
        self.send_head(head)?;
        if !body.is_empty() {
            self.send_body(body)?;
        }
        self.finish()
    }
}

/// Writes responses in CGI format: `Status:` line, headers, blank line, body. CGI mode writes
/// this to stdout; FastCGI mode sends the same bytes as FCGI_STDOUT.
///
/// A streamed response's pieces can be gathered into blocks (fewer, larger writes to the
/// server); a whole response goes out as one vectored write of its head and body, which are
/// not copied into the block first (a copy that would also fault in the block's fresh pages).
pub struct CgiWriter<W: Write> {
    out: W,
    /// Pieces held back, up to `block` bytes.
    held: Vec<u8>,
    /// 0: every piece is written at once.
    block: usize,
}

impl<W: Write> CgiWriter<W> {
    /// Wraps an output stream; every piece is written at once.
    pub fn new(out: W) -> Self {
        Self::gathering(out, 0)
    }

    /// Wraps an output stream, gathering a streamed response's pieces into writes of up to
    /// `block` bytes.
    pub fn gathering(out: W, block: usize) -> Self {
        CgiWriter {
            out,
            // Allocated now, before the request's other buffers, though a whole response never
            // touches it: measured (bench/RESULTS.md, "CGI 200"), allocating it lazily moved
            // the engine's zeroed 64 KiB read chunk from freshly grown heap, which calloc need
            // not clear, to reused heap, which it clears and so faults in whole.
            held: Vec::with_capacity(block),
            block,
        }
    }

    /// The output stream (with what was held back written to it).
    pub fn into_inner(mut self) -> io::Result<W> {
        self.write_held()?;
        Ok(self.out)
    }

    /// Holds a piece back while it and what is held stay under a block; else writes both.
    fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.held.len() + piece.len() < self.block {
            self.held.extend_from_slice(piece);
            return Ok(());
        }
        write_all_vectored(
            &mut self.out,
            &mut [IoSlice::new(&self.held), IoSlice::new(piece)],
        )?;
        self.held.clear();
        Ok(())
    }

    fn write_held(&mut self) -> io::Result<()> {
        if !self.held.is_empty() {
            self.out.write_all(&self.held)?;
            self.held.clear();
        }
        Ok(())
    }
}

/// `Write::write_all_vectored` (not stable): writes every slice, in as few calls as it takes.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The CGI header block for a head, always with an explicit `Status:` line (so Apache does not
/// re-decide conditions on our output).
pub fn cgi_head_bytes(head: &ResponseHead) -> Vec<u8> {
    // The exact size (a u16 status has at most five digits): one allocation, no growth.
    let size = "Status: 65535 \r\n\r\n".len()
        + head.reason.len()
        + head
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    // Writing to a Vec cannot fail.
    let _ = write!(bytes, "Status: {} {}\r\n", head.status, head.reason);
    for (name, value) in &head.headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}

impl<W: Write> ResponseSink for CgiWriter<W> {
    fn send_head(&mut self, head: &ResponseHead) -> io::Result<()> {
        self.write_piece(&cgi_head_bytes(head))
    }

    fn send_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write_piece(chunk)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.write_held()?;
        self.out.flush()
    }

    fn send_whole(&mut self, head: &ResponseHead, body: &[u8]) -> io::Result<()> {
        let head = cgi_head_bytes(head);
        write_all_vectored(
            &mut self.out,
            &mut [
                IoSlice::new(&self.held),
                IoSlice::new(&head),
                IoSlice::new(body),
            ],
        )?;
        self.held.clear();
        self.out.flush()
    }
}

/// Adapts a sink's body to `std::io::Write`, so encoders can write into it.
pub struct BodyWriter<'a> {
    sink: &'a mut dyn ResponseSink,
    /// Bytes written so far.
    pub written: u64,
}

impl<'a> BodyWriter<'a> {
    /// Wraps a sink whose head has been sent.
    pub fn new(sink: &'a mut dyn ResponseSink) -> Self {
        BodyWriter { sink, written: 0 }
    }
}

impl Write for BodyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.sink.send_body(buf)?;
            self.written += buf.len() as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_format_has_explicit_status() {
        let mut head = ResponseHead::new(304);
        head.push("ETag", "\"x\"");
        let mut w = CgiWriter::new(Vec::new());
        w.send_head(&head).unwrap();
        assert_eq!(
            w.into_inner().unwrap(),
            b"Status: 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
        );
    }

    /// Counts the writes that reach the stream, and keeps their bytes.
    #[derive(Default)]
    struct Writes {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            // One slice at most per call, so the caller must go on where a short write stopped.
            let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
                return Ok(0);
            };
            let n = first.len().min(7);
            self.bytes.extend_from_slice(&first[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_whole_response_is_head_then_body_even_through_short_writes() {
        let mut head = ResponseHead::new(200);
        head.push("Content-Length", "11");
        let mut w = CgiWriter::gathering(Writes::default(), 64);
        w.send_whole(&head, b"hello world").unwrap();
        let out = w.into_inner().unwrap();
        assert_eq!(
            out.bytes,
            b"Status: 200 OK\r\nContent-Length: 11\r\n\r\nhello world"
        );
    }

    #[test]
    fn streamed_pieces_are_gathered_into_blocks_in_order() {
        let head = ResponseHead::new(200);
        let mut w = CgiWriter::gathering(Writes::default(), 32);
        w.send_head(&head).unwrap();
        w.send_body(b"abc").unwrap();
        w.send_body(&[b'x'; 40]).unwrap();
        w.send_body(b"def").unwrap();
        w.finish().unwrap();
        let out = w.into_inner().unwrap();
        let mut expected = b"Status: 200 OK\r\n\r\nabc".to_vec();
        expected.extend_from_slice(&[b'x'; 40]);
        expected.extend_from_slice(b"def");
        assert_eq!(out.bytes, expected);
        // Head and "abc" held, written with the 40 bytes (short writes of 7: 63 / 7 = 9
        // calls), then "def" at the end.
        assert_eq!(out.calls, 10);
    }

    #[test]
    fn vary_is_merged_without_duplicates() {
        let mut head = ResponseHead::new(200);
        head.push("Vary", "accept-encoding, User-Agent");
        head.add_vary(&["Accept-Encoding", "Cookie"]);
        assert_eq!(
            head.get("Vary"),
            Some(&b"accept-encoding, User-Agent, Cookie"[..])
        );
    }
}
