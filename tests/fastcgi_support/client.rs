//! A raw FastCGI client (the web server's side) over a unix or TCP stream.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http_conditional::fastcgi::codec::{
    BEGIN_REQUEST, END_REQUEST, PARAMS, RESPONDER, STDERR, STDIN, STDOUT, encode_pairs,
    encode_stream, parse_end_request, take_records,
};

use super::PATIENCE;
use crate::common;

/// A raw FastCGI client over a unix or TCP stream.
pub struct Client {
    pub stream: Box<dyn Stream>,
    pub buf: BytesMut,
}

pub trait Stream: Read + Write + Send {
    fn shutdown_write(&self);
    fn set_timeout(&self, limit: Duration);
}

impl Stream for UnixStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn set_timeout(&self, limit: Duration) {
        let _ = self.set_read_timeout(Some(limit));
        let _ = self.set_write_timeout(Some(limit));
    }
}

impl Stream for TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn set_timeout(&self, limit: Duration) {
        let _ = self.set_read_timeout(Some(limit));
        let _ = self.set_write_timeout(Some(limit));
    }
}

/// What a request got back.
#[derive(Debug, Default)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// (appStatus, protocolStatus) of END_REQUEST.
    pub end: Option<(u32, u8)>,
    /// STDOUT records received, with their lengths (for "no empty record before the end").
    pub stdout_records: Vec<usize>,
}

impl Reply {
    pub fn status(&self) -> u16 {
        common::parse_cgi_output(&self.stdout).0
    }

    pub fn parsed(&self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        common::parse_cgi_output(&self.stdout)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed()
            .1
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn body(&self) -> Vec<u8> {
        self.parsed().2
    }
}

impl Client {
    pub fn unix(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to the responder");
        stream.set_timeout(PATIENCE);
        Client {
            stream: Box::new(stream),
            buf: BytesMut::new(),
        }
    }

    pub fn tcp(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the responder");
        stream.set_timeout(PATIENCE);
        Client {
            stream: Box::new(stream),
            buf: BytesMut::new(),
        }
    }

    /// Sends raw bytes; errors (the responder closed) are returned, not fatal.
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one stream's content as records (split at 65535; empty = end of stream).
    pub fn record(&mut self, record_type: u8, id: u16, content: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode_stream(record_type, id, content, &mut out);
        self.raw(&out)
    }

    pub fn begin(&mut self, id: u16, keep_conn: bool) -> std::io::Result<()> {
        self.begin_role(id, RESPONDER, keep_conn)
    }

    pub fn begin_role(&mut self, id: u16, role: u16, keep_conn: bool) -> std::io::Result<()> {
        let [a, b] = role.to_be_bytes();
        self.record(
            BEGIN_REQUEST,
            id,
            &[a, b, u8::from(keep_conn), 0, 0, 0, 0, 0],
        )
    }

    /// Sends the params as one stream (and its end).
    pub fn params<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        id: u16,
        pairs: &[(N, V)],
    ) -> std::io::Result<()> {
        let mut enc = BytesMut::new();
        encode_pairs(pairs, &mut enc);
        self.record(PARAMS, id, &enc)?;
        self.record(PARAMS, id, b"")
    }

    /// A whole request: BEGIN, params, stdin (and its end).
    pub fn send_request(
        &mut self,
        id: u16,
        keep_conn: bool,
        pairs: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<()> {
        self.begin(id, keep_conn)?;
        self.params(id, pairs)?;
        if !body.is_empty() {
            self.record(STDIN, id, body)?;
        }
        self.record(STDIN, id, b"")
    }

    /// Reads records until END_REQUEST for `id` (or EOF / timeout, leaving `end` None).
    pub fn read_reply(&mut self, id: u16) -> Reply {
        let mut reply = Reply::default();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let records = take_records(&mut self.buf).expect("well-formed records");
            for (t, rid, content) in records {
                assert_eq!(rid, id, "record for another request id: type {t}");
                match t {
                    STDOUT => {
                        reply.stdout_records.push(content.len());
                        reply.stdout.extend_from_slice(&content);
                    }
                    STDERR => reply.stderr.extend_from_slice(&content),
                    END_REQUEST => {
                        reply.end = parse_end_request(&content);
                        return reply;
                    }
                    other => panic!("unexpected record type {other}"),
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return reply,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads any records (type, id, content) until `count` arrived or EOF / timeout.
    pub fn read_records(&mut self, count: usize) -> Vec<(u8, u16, Vec<u8>)> {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            for (t, id, c) in take_records(&mut self.buf).expect("well-formed records") {
                got.push((t, id, c.to_vec()));
            }
            if got.len() >= count {
                return got;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True when the responder closed the connection (EOF) within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_timeout(limit);
        let mut chunk = [0u8; 4096];
        let start = Instant::now();
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) if start.elapsed() < limit => continue,
                Ok(_) => return false,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }
}
