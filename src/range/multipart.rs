//! The response a Range decision makes of a buffered 200: 206 with one range, 206 with
//! `multipart/byteranges` (RFC 9110 §14.6), 416, or the whole body with `Accept-Ranges`.

use md5::{Digest, Md5};

use super::{ByteRange, RangeDecision, Unsatisfiable};
use crate::failure::reason_phrase;
use crate::response::ResponseHead;
use crate::validators::hex;

/// Headers that describe the whole body; a 206 or 416 says them again or not at all.
const BODY_HEADERS: [&str; 4] = [
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Content-Type",
];

/// Turns the decision into the status, headers and body to send. `decision` must have been
/// made for this body's length; one that does not fit it sends the whole body.
pub fn render(decision: &RangeDecision, head: &mut ResponseHead, body: Vec<u8>) -> Vec<u8> {
    let fits = |r: &ByteRange| usize::try_from(r.last).is_ok_and(|last| last < body.len());
    match decision {
        RangeDecision::Single(range) if fits(range) => single(*range, head, &body),
        RangeDecision::Multiple(ranges) if ranges.iter().all(fits) => multiple(ranges, head, &body),
        RangeDecision::Unsatisfiable(why) => unsatisfiable(*why, head, body.len()),
        RangeDecision::Whole(why) if !why.accepts_ranges() => {
            set_length(head, body.len());
            body
        }
        _ => {
            head.remove(&["Accept-Ranges"]);
            head.push("Accept-Ranges", "bytes");
            set_length(head, body.len());
            body
        }
    }
}

/// 206 with Content-Range; the other headers stay as the 200's (RFC 9110 §15.3.7).
fn single(range: ByteRange, head: &mut ResponseHead, body: &[u8]) -> Vec<u8> {
    let part = slice(body, range).to_vec();
    set_status(head, 206);
    head.remove(&["Content-Range", "Accept-Ranges"]);
    head.push("Content-Range", range.content_range(body.len()));
    head.push("Accept-Ranges", "bytes");
    set_length(head, part.len());
    part
}

/// 206 with `multipart/byteranges`: each part carries the representation's Content-Type and
/// Content-Encoding (the multipart body itself is not encoded, so Content-Encoding moves
/// from the response into the parts) and its Content-Range.
fn multiple(ranges: &[ByteRange], head: &mut ResponseHead, body: &[u8]) -> Vec<u8> {
    let boundary = boundary_for(body, ranges);
    let mut part_head = Vec::new();
    for name in ["Content-Type", "Content-Encoding"] {
        if let Some(value) = head.get(name) {
            part_head.extend_from_slice(name.as_bytes());
            part_head.extend_from_slice(b": ");
            part_head.extend_from_slice(value);
            part_head.extend_from_slice(b"\r\n");
        }
    }
    let payload: usize = ranges.iter().map(|r| slice(body, *r).len()).sum();
    let mut out = Vec::with_capacity(payload + ranges.len() * (128 + part_head.len()));
    for (i, range) in ranges.iter().enumerate() {
        // RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it; the first has none.
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part_head);
        out.extend_from_slice(b"Content-Range: ");
        out.extend_from_slice(range.content_range(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(slice(body, *range));
    }
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    set_status(head, 206);
    head.remove(&BODY_HEADERS);
    head.remove(&["Content-Encoding"]);
    head.push(
        "Content-Type",
        format!("multipart/byteranges; boundary={boundary}"),
    );
    head.push("Accept-Ranges", "bytes");
    set_length(head, out.len());
    out
}

/// 416 with `Content-Range: bytes */LENGTH` and a short text. It keeps the validators, Vary
/// and what the script set (cookies), but is never stored: a cache keys on the URL, not the
/// Range, and would hand the 416 to requests for the whole page.
fn unsatisfiable(why: Unsatisfiable, head: &mut ResponseHead, length: usize) -> Vec<u8> {
    let text = format!("416 Range Not Satisfiable: {why}\n").into_bytes();
    set_status(head, 416);
    head.remove(&BODY_HEADERS);
    head.remove(&["Content-Encoding", "Cache-Control", "Expires", "Pragma"]);
    head.push("Content-Range", format!("bytes */{length}"));
    head.push("Accept-Ranges", "bytes");
    head.push("Cache-Control", "no-store");
    head.push("Content-Type", "text/plain; charset=utf-8");
    set_length(head, text.len());
    text
}

/// A boundary that does not occur in the body (RFC 2046 §5.1.1: at most 70 characters).
/// Derived from the request's ranges and a counter, so the same request for the same bytes
/// gets the same response; each try that occurs in the body is one of its finitely many
/// 34-byte windows, so the search ends.
fn boundary_for(body: &[u8], ranges: &[ByteRange]) -> String {
    let mut attempt: u64 = 0;
    loop {
        let mut hash = Md5::new();
        hash.update(attempt.to_le_bytes());
        hash.update((body.len() as u64).to_le_bytes());
        for range in ranges {
            hash.update(range.first.to_le_bytes());
            hash.update(range.last.to_le_bytes());
        }
        let boundary = format!("hc{}", hex(&hash.finalize()));
        if !contains(body, boundary.as_bytes()) {
            return boundary;
        }
        attempt += 1;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The bytes of a range that `render` checked fits the body.
fn slice(body: &[u8], range: ByteRange) -> &[u8] {
    let first = usize::try_from(range.first).unwrap_or(usize::MAX);
    let last = usize::try_from(range.last).unwrap_or(usize::MAX);
    body.get(first..=last).unwrap_or_default()
}

fn set_status(head: &mut ResponseHead, status: u16) {
    head.status = status;
    head.reason = reason_phrase(status).to_string();
}

/// Content-Length for the body sent, except where the status has no content (RFC 9110 §8.6).
fn set_length(head: &mut ResponseHead, length: usize) {
    if head.status >= 200 && head.status != 204 && head.status != 304 {
        head.remove(&["Content-Length"]);
        head.push("Content-Length", length.to_string());
    }
}
