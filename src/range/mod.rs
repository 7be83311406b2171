//! Range requests (RFC 9110 §14) and If-Range (§13.1.5) for a declared script's body buffered
//! whole: the headers parsed once into small types, one pure decision, and the response built
//! from it (`respond`, the one call delivery makes).
//!
//! Choices where the RFC leaves room (the contract's "Range" paragraph decides the rest):
//! - whitespace: OWS around list elements and empty elements are accepted (RFC 9110 §5.6.1);
//!   none inside a range-spec, where the grammar has none (`bytes=0 - 9` does not parse);
//! - numbers too large for 64 bits mean "past any end" (they saturate), never a parse error;
//! - overlapping: two ranges overlap when, with suffixes resolved and last positions clamped to
//!   the body, some byte lies in both. Adjacent ranges (`0-9,10-19`) do not overlap and are
//!   sent as two parts. Ranges out of order are served, in the order asked (§14.2 "SHOULD send
//!   the parts in the same order"): with at most 16 parts of a buffered body they cost nothing,
//!   and refusing them would break clients that fetch a file's tail first;
//! - an empty body: a suffix range is satisfiable there (§14.1.2) but names no byte, and no
//!   Content-Range can say "0 bytes", so it gets the whole (empty) 200.

mod decide;
mod multipart;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::SystemTime;

use crate::etag::EntityTag;
use crate::request::{Header, MAX_HEADER_BYTES, Request};
use crate::response::ResponseHead;
use crate::timestamp::parse_http_date;
use crate::validators::{self, Validators};

pub use decide::{
    IfRangeCheck, RangeDecision, Selection, Unsatisfiable, Whole, check_if_range, decide, resolve,
    select,
};
pub use multipart::render;

/// More satisfiable ranges than this get the whole 200 (the limit; RFC 9110 §14.2
/// allows ignoring "many small ranges", a denial-of-service pattern).
pub const MAX_RANGES: usize = 16;

/// One range-spec of RFC 9110 §14.1.1, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` (int-range with a last-pos) or `first-` (to the end).
    From {
        /// first-pos.
        first: u64,
        /// last-pos, `None` for "to the end".
        last: Option<u64>,
    },
    /// `-length`: the last `length` bytes (suffix-range).
    Suffix(u64),
}

impl RangeSpec {
    /// The bytes this spec names in a body of `length` bytes; `None` when unsatisfiable
    /// (§14.1.2: a first-pos at or past the end, a suffix of zero, or an empty body).
    pub fn resolve(self, length: u64) -> Option<ByteRange> {
        let end = length.checked_sub(1)?;
        match self {
            RangeSpec::From { first, last } if first <= end => Some(ByteRange {
                first,
                last: last.map_or(end, |last| last.min(end)),
            }),
            RangeSpec::From { .. } | RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(suffix) => Some(ByteRange {
                first: length - suffix.min(length),
                last: end,
            }),
        }
    }
}

impl fmt::Display for RangeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeSpec::From { first, last: None } => write!(f, "{first}-"),
            RangeSpec::From {
                first,
                last: Some(last),
            } => write!(f, "{first}-{last}"),
            RangeSpec::Suffix(length) => write!(f, "-{length}"),
        }
    }
}

/// A satisfiable range resolved against a body: positions `first..=last`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte, counting from 0.
    pub first: u64,
    /// Last byte, inclusive.
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes.
    pub fn len(self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a resolved range holds at least one byte (for clippy's `len` rule).
    pub fn is_empty(self) -> bool {
        false
    }

    /// Some byte lies in both.
    pub fn overlaps(self, other: ByteRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// The `Content-Range` value for a body of `length` bytes (RFC 9110 §14.4).
    pub fn content_range(self, length: usize) -> String {
        format!("bytes {}-{}/{length}", self.first, self.last)
    }
}

/// The Range header (RFC 9110 §14.2) as understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeHeader {
    /// Not sent.
    Absent,
    /// Sent but not for us (another unit, no unit, `bytes=` naming nothing, too long):
    /// treated as absent.
    Ignored(&'static str),
    /// A `bytes` range set that does not parse: 416 (the contract; what Go, tower-http and
    /// actix do).
    Malformed(&'static str),
    /// A `bytes` range set, in the order sent.
    Bytes(Vec<RangeSpec>),
}

/// The validator of an If-Range header (RFC 9110 §13.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfRange {
    /// An entity-tag (a weak one is kept so that explain can say why it never matches).
    Tag(EntityTag),
    /// An HTTP-date.
    Date(SystemTime),
}

/// Range and If-Range, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeConditions {
    /// Range.
    pub range: RangeHeader,
    /// If-Range; unusable values are `Ignored` and never match.
    pub if_range: Header<IfRange>,
}

impl RangeConditions {
    /// Reads HTTP_RANGE and HTTP_IF_RANGE.
    pub fn from_request(request: &Request) -> Self {
        let range = match request.var("HTTP_RANGE") {
            None => RangeHeader::Absent,
            Some(raw) if raw.len() > MAX_HEADER_BYTES => RangeHeader::Ignored("value too long"),
            Some(raw) => parse_range(raw),
        };
        let if_range = match request.var("HTTP_IF_RANGE") {
            None => Header::Absent,
            Some(raw) if raw.len() > MAX_HEADER_BYTES => Header::Ignored("value too long"),
            Some(raw) => parse_if_range(raw),
        };
        RangeConditions { range, if_range }
    }

    /// Neither header was sent.
    pub fn is_empty(&self) -> bool {
        self.range == RangeHeader::Absent && !self.if_range.is_sent()
    }
}

/// Parses a Range value: `ranges-specifier = range-unit "=" range-set` (RFC 9110 §14.1.1).
pub fn parse_range(raw: &[u8]) -> RangeHeader {
    let text = trim_ows(raw);
    let Some(eq) = text.iter().position(|&b| b == b'=') else {
        return RangeHeader::Ignored("names no range unit");
    };
    let (unit, set) = (&text[..eq], &text[eq + 1..]);
    if unit.is_empty() {
        return RangeHeader::Ignored("names no range unit");
    }
    // §14.1: range units are compared case-insensitively.
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return RangeHeader::Ignored("the range unit is not bytes");
    }
    let mut specs = Vec::new();
    for element in set.split(|&b| b == b',').map(trim_ows) {
        if element.is_empty() {
            continue;
        }
        match parse_spec(element) {
            Ok(spec) => specs.push(spec),
            Err(why) => return RangeHeader::Malformed(why),
        }
    }
    if specs.is_empty() {
        return RangeHeader::Ignored("bytes= names no range");
    }
    RangeHeader::Bytes(specs)
}

/// `int-range = first-pos "-" [ last-pos ]` or `suffix-range = "-" suffix-length`.
fn parse_spec(spec: &[u8]) -> Result<RangeSpec, &'static str> {
    const SHAPE: &str = "a range is not first-last, first- or -length";
    if let Some(suffix) = spec.strip_prefix(b"-") {
        return number(suffix).map(RangeSpec::Suffix).ok_or(SHAPE);
    }
    let dash = spec.iter().position(|&b| b == b'-').ok_or(SHAPE)?;
    let first = number(&spec[..dash]).ok_or(SHAPE)?;
    let rest = &spec[dash + 1..];
    let last = if rest.is_empty() {
        None
    } else {
        Some(number(rest).ok_or(SHAPE)?)
    };
    // §14.1.1: "invalid if the last-pos value is present and less than the first-pos".
    if last.is_some_and(|last| last < first) {
        return Err("a range ends before it starts");
    }
    Ok(RangeSpec::From { first, last })
}

/// `1*DIGIT`, saturating: a position past 2^64 lies past any body's end.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// OWS is spaces and horizontal tabs (RFC 9110 §5.6.3).
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Parses If-Range: `entity-tag / HTTP-date` (RFC 9110 §13.1.5).
pub fn parse_if_range(raw: &[u8]) -> Header<IfRange> {
    let text = trim_ows(raw);
    if text.starts_with(b"\"") || text.starts_with(b"W/") {
        return match EntityTag::parse(text) {
            Some(tag) => Header::Value(IfRange::Tag(tag)),
            None => Header::Ignored("malformed entity-tag"),
        };
    }
    match parse_http_date(text) {
        Some(date) => Header::Value(IfRange::Date(date)),
        None => Header::Ignored("neither an entity-tag nor an HTTP-date"),
    }
}

/// The validators a response carries, which If-Range is compared with: the ETag of the
/// variant actually sent and Last-Modified.
pub fn validators_of(head: &ResponseHead) -> Validators {
    validators::from_script_headers(head.get("ETag"), head.get("Last-Modified"))
}

/// What `respond` made of a buffered response: the decision (for the log and metrics) and
/// the body to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranged {
    /// What was decided.
    pub decision: RangeDecision,
    /// The body to send (the whole one, one range, the multipart body, or the 416 text).
    pub body: Vec<u8>,
}

/// Applies Range and If-Range to a declared script's response whose body (in its chosen
/// content coding) was buffered whole: the one call the buffered path of delivery makes, after
/// the head carries its final ETag, Last-Modified and Content-Encoding.
///
/// If-Range is compared with the validators the head carries, so an encoded variant's
/// ranges are only served to a client holding that variant's tag. Only a 200 gets ranges; any
/// other status is left alone. Content-Length is set to the returned body's length unless the
/// status has no content (1xx, 204, 304).
pub fn respond(
    request: &Request,
    now: SystemTime,
    head: &mut ResponseHead,
    body: Vec<u8>,
) -> Ranged {
    let decision = if head.status == 200 {
        let conditions = RangeConditions::from_request(request);
        let current = validators_of(head);
        let length = u64::try_from(body.len()).unwrap_or(u64::MAX);
        decide(&conditions, &request.method(), &current, length, now)
    } else {
        RangeDecision::Whole(Whole::StatusNotOk)
    };
    let body = render(&decision, head, body);
    Ranged { decision, body }
}
