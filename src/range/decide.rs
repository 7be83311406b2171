//! The Range decision as one pure function, in two steps: what the request and the validators
//! decide without the body (`select`, which explain also shows), then the body's length
//! (`resolve`).

use std::fmt;
use std::time::SystemTime;

use super::{ByteRange, IfRange, MAX_RANGES, RangeConditions, RangeHeader, RangeSpec};
use crate::request::{Header, Method};
use crate::timestamp::truncate_to_second;
use crate::validators::Validators;

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole representation, with the response's own status.
    Whole(Whole),
    /// 206 with one range and Content-Range.
    Single(ByteRange),
    /// 206 with `multipart/byteranges`, the parts in the order asked; 2 to 16 of them, none
    /// overlapping.
    Multiple(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */LENGTH`.
    Unsatisfiable(Unsatisfiable),
}

/// Why the whole representation is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// The response is not a 200; only a 200 is made partial.
    StatusNotOk,
    /// Neither GET nor HEAD: Range is not defined for the method (RFC 9110 §14.2).
    MethodNotGet,
    /// HEAD ignores Range (RFC 9110 §14.2: "only defined for GET").
    Head,
    /// No Range header.
    NoRange,
    /// A Range that is not for us (another unit, none, `bytes=` naming nothing).
    Ignored(&'static str),
    /// If-Range did not hold (RFC 9110 §13.1.5), for this reason.
    IfRangeFailed(&'static str),
    /// Two satisfiable ranges share a byte.
    Overlapping,
    /// More than `MAX_RANGES` satisfiable ranges.
    TooMany,
    /// The body is empty: only a suffix range is satisfiable there and it names no byte.
    EmptyBody,
}

impl Whole {
    /// The response says `Accept-Ranges: bytes`: a GET or HEAD 200 whose ranges we would
    /// serve (RFC 9110 §14.3), which PDF viewers and media players look for before asking.
    pub fn accepts_ranges(self) -> bool {
        !matches!(self, Whole::StatusNotOk | Whole::MethodNotGet)
    }
}

impl fmt::Display for Whole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Whole::StatusNotOk => f.write_str("only a 200 is made partial"),
            Whole::MethodNotGet => f.write_str("Range is only defined for GET (RFC 9110 §14.2)"),
            Whole::Head => f.write_str("HEAD ignores Range (RFC 9110 §14.2)"),
            Whole::NoRange => f.write_str("no Range header"),
            Whole::Ignored(why) => write!(f, "Range ignored: {why}"),
            Whole::IfRangeFailed(why) => {
                write!(
                    f,
                    "If-Range does not hold ({why}), so Range is ignored (RFC 9110 §13.1.5)"
                )
            }
            Whole::Overlapping => f.write_str("the ranges overlap"),
            Whole::TooMany => write!(f, "more than {MAX_RANGES} ranges"),
            Whole::EmptyBody => f.write_str("the body is empty"),
        }
    }
}

/// Why 416.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsatisfiable {
    /// The `bytes` range set does not parse.
    Malformed(&'static str),
    /// No range is satisfiable (RFC 9110 §14.1.2).
    NoneSatisfiable,
}

impl fmt::Display for Unsatisfiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsatisfiable::Malformed(why) => write!(f, "the range set does not parse: {why}"),
            Unsatisfiable::NoneSatisfiable => f.write_str(
                "no range is satisfiable: none starts before the end, no suffix is longer \
                 than zero (RFC 9110 §14.1.2)",
            ),
        }
    }
}

/// What the request decides before the body's length is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Decided whatever the body.
    Decided(RangeDecision),
    /// These ranges apply; the body's length decides the rest (`resolve`).
    Ranges(&'a [RangeSpec]),
}

/// Whether If-Range holds (RFC 9110 §13.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfRangeCheck {
    /// Not sent: Range applies unconditionally.
    Absent,
    /// The validator matches: Range applies.
    Holds,
    /// It does not, for this reason: the whole 200.
    Fails(&'static str),
}

/// The whole decision (RFC 9110 §13.2.2 step 5, §14.2): `current` are the validators the
/// response carries (the chosen variant's ETag), `length` the body's length in the chosen
/// coding, `now` decides whether Last-Modified is a strong validator yet.
pub fn decide(
    conditions: &RangeConditions,
    method: &Method,
    current: &Validators,
    length: u64,
    now: SystemTime,
) -> RangeDecision {
    match select(conditions, method, current, now) {
        Selection::Decided(decision) => decision,
        Selection::Ranges(specs) => resolve(specs, length),
    }
}

/// The part of the decision that does not depend on the body: the method, the Range header's
/// unit and syntax, and If-Range (evaluated before the range set's syntax, as §13.2.2 step 5
/// says: a failed If-Range means "ignore the Range header field").
pub fn select<'a>(
    conditions: &'a RangeConditions,
    method: &Method,
    current: &Validators,
    now: SystemTime,
) -> Selection<'a> {
    let whole = |why| Selection::Decided(RangeDecision::Whole(why));
    match method {
        Method::Get => {}
        Method::Head => return whole(Whole::Head),
        Method::Other(_) => return whole(Whole::MethodNotGet),
    }
    let ranges = match &conditions.range {
        RangeHeader::Absent => return whole(Whole::NoRange),
        RangeHeader::Ignored(why) => return whole(Whole::Ignored(why)),
        RangeHeader::Malformed(why) => Err(*why),
        RangeHeader::Bytes(specs) => Ok(specs.as_slice()),
    };
    if let IfRangeCheck::Fails(why) = check_if_range(&conditions.if_range, current, now) {
        return whole(Whole::IfRangeFailed(why));
    }
    match ranges {
        Ok(specs) => Selection::Ranges(specs),
        Err(why) => Selection::Decided(RangeDecision::Unsatisfiable(Unsatisfiable::Malformed(why))),
    }
}

/// RFC 9110 §13.1.5: an entity-tag holds when it is a strong match for the current one; an
/// HTTP-date when it equals Last-Modified and Last-Modified is a strong validator.
///
/// The comparison is exact: the wrapper's own variant tags (`"x-gzip"`), which
/// If-Match accepts for the identity tag, name other bytes here. Last-Modified counts as
/// strong once its second has ended (RFC 9110 §8.8.2.2: the origin server must know that
/// the representation did not change twice within that second; no change can still fall
/// into a second that is over).
pub fn check_if_range(
    if_range: &Header<IfRange>,
    current: &Validators,
    now: SystemTime,
) -> IfRangeCheck {
    match if_range {
        Header::Absent => IfRangeCheck::Absent,
        Header::Ignored(_) => IfRangeCheck::Fails("an unusable If-Range never matches"),
        Header::Value(IfRange::Tag(tag)) if tag.weak => {
            IfRangeCheck::Fails("a weak entity-tag never matches")
        }
        Header::Value(IfRange::Tag(tag)) => match &current.etag {
            None => IfRangeCheck::Fails("the response has no ETag"),
            Some(ours) if !ours.weak && ours.opaque == tag.opaque => IfRangeCheck::Holds,
            Some(_) => IfRangeCheck::Fails("not the current ETag"),
        },
        Header::Value(IfRange::Date(date)) => match current.last_modified {
            None => IfRangeCheck::Fails("the response has no Last-Modified"),
            Some(modified) if truncate_to_second(modified) != truncate_to_second(*date) => {
                IfRangeCheck::Fails("the date is not Last-Modified")
            }
            Some(modified) if truncate_to_second(modified) >= truncate_to_second(now) => {
                IfRangeCheck::Fails(
                    "Last-Modified is the current second, not yet a strong validator",
                )
            }
            Some(_) => IfRangeCheck::Holds,
        },
    }
}

/// The ranges against a body of `length` bytes (RFC 9110 §14.1.2, §14.2).
pub fn resolve(specs: &[RangeSpec], length: u64) -> RangeDecision {
    if length == 0 {
        return if specs
            .iter()
            .any(|s| matches!(s, RangeSpec::Suffix(n) if *n > 0))
        {
            RangeDecision::Whole(Whole::EmptyBody)
        } else {
            RangeDecision::Unsatisfiable(Unsatisfiable::NoneSatisfiable)
        };
    }
    // One more than the limit is enough to know it is passed (a 64 KiB header holds ~16k).
    let ranges: Vec<ByteRange> = specs
        .iter()
        .filter_map(|spec| spec.resolve(length))
        .take(MAX_RANGES + 1)
        .collect();
    match ranges.as_slice() {
        [] => RangeDecision::Unsatisfiable(Unsatisfiable::NoneSatisfiable),
        [one] => RangeDecision::Single(*one),
        many if many.len() > MAX_RANGES => RangeDecision::Whole(Whole::TooMany),
        many if any_overlap(many) => RangeDecision::Whole(Whole::Overlapping),
        _ => RangeDecision::Multiple(ranges),
    }
}

/// Whether any two ranges share a byte: sorted by start, each must begin after the previous
/// one ends (adjacent ranges do not overlap).
fn any_overlap(ranges: &[ByteRange]) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.first);
    sorted.windows(2).any(|pair| pair[0].overlaps(pair[1]))
}
