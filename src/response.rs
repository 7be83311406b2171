//! The response the engine produces, and how it is written as a CGI response (RFC 3875 §6).

use std::io::{self, Write};

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
pub struct CgiWriter<W: Write> {
    out: W,
}

impl<W: Write> CgiWriter<W> {
    /// Wraps an output stream.
    pub fn new(out: W) -> Self {
        CgiWriter { out }
    }

    /// The output stream.
    pub fn into_inner(self) -> W {
        self.out
    }
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
        self.out.write_all(&cgi_head_bytes(head))
    }

    fn send_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.out.write_all(chunk)
    }

    fn finish(&mut self) -> io::Result<()> {
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
            w.into_inner(),
            b"Status: 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
        );
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
