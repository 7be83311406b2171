//! FastCGI records (§3.3): the 8-byte header, padding, streams ended by an empty record, and
//! the protocol's constants. Both directions: the responder ([`crate::fastcgi`]) and the
//! client that forwards to a running application ([`crate::backend::fastcgi_client`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `FCGI_VERSION_1`, the only protocol version (§3.3, §8).
pub const FCGI_VERSION_1: u8 = 1;
/// `FCGI_HEADER_LEN`: length of a record header (§3.3, §8).
pub const HEADER_LEN: usize = 8;
/// Largest `contentLength` of one record, a 16-bit field (§3.3).
pub const MAX_CONTENT_LEN: usize = 65535;

/// `FCGI_BEGIN_REQUEST` record type (§5.1, §8).
pub const BEGIN_REQUEST: u8 = 1;
/// `FCGI_ABORT_REQUEST` record type (§5.4, §8).
pub const ABORT_REQUEST: u8 = 2;
/// `FCGI_END_REQUEST` record type (§5.5, §8).
pub const END_REQUEST: u8 = 3;
/// `FCGI_PARAMS` stream record type (§5.2, §8).
pub const PARAMS: u8 = 4;
/// `FCGI_STDIN` stream record type (§5.3, §8).
pub const STDIN: u8 = 5;
/// `FCGI_STDOUT` stream record type (§5.3, §8).
pub const STDOUT: u8 = 6;
/// `FCGI_STDERR` stream record type (§5.3, §8).
pub const STDERR: u8 = 7;
/// `FCGI_DATA` stream record type (§5.3, §8).
pub const DATA: u8 = 8;
/// `FCGI_GET_VALUES` management record type (§4.1, §8).
pub const GET_VALUES: u8 = 9;
/// `FCGI_GET_VALUES_RESULT` management record type (§4.1, §8).
pub const GET_VALUES_RESULT: u8 = 10;
/// `FCGI_UNKNOWN_TYPE` management record type (§4.2, §8).
pub const UNKNOWN_TYPE: u8 = 11;
/// `FCGI_KEEP_CONN` bit of the BEGIN_REQUEST `flags` byte (§5.1).
pub const KEEP_CONN: u8 = 1;
/// `FCGI_RESPONDER` role (§5.1, §6.2).
pub const RESPONDER: u16 = 1;
/// `FCGI_AUTHORIZER` role (§5.1, §6.3).
pub const AUTHORIZER: u16 = 2;
/// `FCGI_FILTER` role (§5.1, §6.4).
pub const FILTER: u16 = 3;
/// `FCGI_REQUEST_COMPLETE` protocol status (§5.5).
pub const REQUEST_COMPLETE: u8 = 0;
/// `FCGI_CANT_MPX_CONN` protocol status (§5.5).
pub const CANT_MPX_CONN: u8 = 1;
/// `FCGI_OVERLOADED` protocol status (§5.5).
pub const OVERLOADED: u8 = 2;
/// `FCGI_UNKNOWN_ROLE` protocol status (§5.5).
pub const UNKNOWN_ROLE: u8 = 3;

/// What was wrong with the peer's bytes (or with a record we were asked to send).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Header `version` other than `FCGI_VERSION_1` (§3.3).
    #[error("unsupported FastCGI version {0}, only 1 is supported")]
    UnsupportedVersion(u8),
    /// `FCGI_BEGIN_REQUEST` body shorter than its 8 bytes (§5.1).
    #[error("FCGI_BEGIN_REQUEST body is {0} bytes, needs 8")]
    BeginBodyTooShort(usize),
    /// Management record (§3.3, §4) whose request id is not 0.
    #[error("management record type {record_type} has request id {id}, needs 0")]
    ManagementRecordWithId { record_type: u8, id: u16 },
    /// Application record (§3.3, §5) with the null request id, received or to be sent.
    #[error("application record type {record_type} has the null request id")]
    NullRequestId { record_type: u8 },
    /// A name-value pair (§3.4) declares more bytes than remain in its record.
    #[error("name-value pair needs {declared} bytes but {remaining} remain in the record")]
    PairLengthExceedsRecord { declared: usize, remaining: usize },
    /// A record ends inside a name-value pair's length prefix (§3.4).
    #[error("name-value pair length prefix cut off with {remaining} bytes left in the record")]
    PairHeaderTruncated { remaining: usize },
    /// The `FCGI_PARAMS` stream (§5.2) is, or declares, more than `limit` bytes.
    #[error("FCGI_PARAMS stream exceeds the {limit}-byte limit")]
    ParamsTooLarge { limit: usize },
    /// The `FCGI_PARAMS` stream ended inside a name-value pair (§3.4, §5.2).
    #[error("FCGI_PARAMS stream ended inside a name-value pair ({buffered} bytes left over)")]
    TruncatedParams { buffered: usize },
    /// The connection closed inside a record (§3.3).
    #[error("connection closed inside a record: {buffered} of {needed} bytes received")]
    UnexpectedEof { buffered: usize, needed: usize },
    /// Content that must fit one record (§3.3) is longer than 65535 bytes.
    #[error("{len} bytes of content do not fit one record (max 65535)")]
    ContentTooLong { len: usize },
    /// Transport error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Total bytes of the record whose header is `h` (§3.3).
pub(crate) fn record_len(h: &[u8; HEADER_LEN]) -> usize {
    let [_, _, _, _, len_hi, len_lo, pad, _] = *h;
    HEADER_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo])) + usize::from(pad)
}

/// Takes one whole record off `src` as (type, id, content), padding dropped; None
/// (with room reserved for the rest of that record only) if it is not all here yet.
pub(crate) fn take_record(src: &mut BytesMut) -> Result<Option<(u8, u16, Bytes)>, ProtocolError> {
    let Some(h) = src.first_chunk::<HEADER_LEN>() else {
        src.reserve(HEADER_LEN.saturating_sub(src.len()));
        return Ok(None);
    };
    let [version, record_type, id_hi, id_lo, len_hi, len_lo, pad, _] = *h;
    // Fail before waiting for the body: a bad version means the framing is unknown.
    if version != FCGI_VERSION_1 {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let total = record_len(h);
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let content = src.split_to(usize::from(u16::from_be_bytes([len_hi, len_lo])));
    src.advance(usize::from(pad));
    Ok(Some((
        record_type,
        u16::from_be_bytes([id_hi, id_lo]),
        content.freeze(),
    )))
}

/// Writes one record, zero-padded to a multiple of 8 (§3.3 recommends 8-byte alignment).
pub(crate) fn put_record(dst: &mut BytesMut, record_type: u8, id: u16, content: &[u8]) {
    // Callers pass at most MAX_CONTENT_LEN bytes; clamp so header and body always agree.
    let content = content.get(..MAX_CONTENT_LEN).unwrap_or(content);
    let pad = (8 - content.len() % 8) % 8;
    dst.reserve(HEADER_LEN + content.len() + pad);
    dst.put_slice(&[FCGI_VERSION_1, record_type]);
    dst.put_u16(id);
    dst.put_u16(content.len() as u16);
    dst.put_slice(&[pad as u8, 0]);
    dst.put_slice(content);
    dst.put_bytes(0, pad);
}

/// Writes stream content as records of at most 65535 bytes; empty content is one empty
/// record (end of stream, §3.3), and only then is an empty record written.
pub(crate) fn put_stream(dst: &mut BytesMut, record_type: u8, id: u16, content: &[u8]) {
    if content.is_empty() {
        put_record(dst, record_type, id, &[]);
    }
    for chunk in content.chunks(MAX_CONTENT_LEN) {
        put_record(dst, record_type, id, chunk);
    }
}

/// Writes `content` as records of `record_type` (§3.3), zero-padded to 8; content over 65535
/// bytes is split, and empty content is one empty record (the end of a stream). No id checks,
/// so management records (id 0) can be written too.
pub fn encode_stream(record_type: u8, id: u16, content: &[u8], out: &mut BytesMut) {
    put_stream(out, record_type, id, content);
}

/// Takes every complete record (type, request id, content; padding
/// dropped) off the front of `buf`, leaving a trailing partial record there (§3.3).
pub fn take_records(buf: &mut BytesMut) -> Result<Vec<(u8, u16, Bytes)>, ProtocolError> {
    let mut records = Vec::new();
    while let Some(record) = take_record(buf)? {
        records.push(record);
    }
    Ok(records)
}

/// Reads an `FCGI_END_REQUEST` body (§5.5) as (appStatus, protocolStatus).
pub fn parse_end_request(content: &[u8]) -> Option<(u32, u8)> {
    let &[a, b, c, d, status, ..] = content.first_chunk::<8>()?;
    Some((u32::from_be_bytes([a, b, c, d]), status))
}

/// The body of an `FCGI_BEGIN_REQUEST` (§5.1) for `role`, with `FCGI_KEEP_CONN` when asked.
pub fn begin_request_body(role: u16, keep_conn: bool) -> [u8; 8] {
    let [hi, lo] = role.to_be_bytes();
    [hi, lo, if keep_conn { KEEP_CONN } else { 0 }, 0, 0, 0, 0, 0]
}
