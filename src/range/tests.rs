//! Each test is named after the RFC 9110 sentence (or contract clause) it checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::etag::EntityTag;
use crate::request::{Header, Method};
use crate::validators::Validators;

const T: u64 = 1_700_000_000;
const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT"; // T as an HTTP-date

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Later than Last-Modified's second: it is a strong validator.
fn now() -> SystemTime {
    at(T + 60)
}

fn current() -> Validators {
    Validators {
        etag: Some(EntityTag::strong("abc")),
        last_modified: Some(at(T)),
    }
}

fn conditions(range: Option<&str>, if_range: Option<&str>) -> RangeConditions {
    let mut vars = Vec::new();
    if let Some(r) = range {
        vars.push((b"HTTP_RANGE".to_vec(), r.as_bytes().to_vec()));
    }
    if let Some(r) = if_range {
        vars.push((b"HTTP_IF_RANGE".to_vec(), r.as_bytes().to_vec()));
    }
    RangeConditions::from_request(&Request::new(vars))
}

fn get(range: &str, length: u64) -> RangeDecision {
    decide(
        &conditions(Some(range), None),
        &Method::Get,
        &current(),
        length,
        now(),
    )
}

fn r(first: u64, last: u64) -> ByteRange {
    ByteRange { first, last }
}

/// Runs a table of (Range, body length, expected decision).
fn table(rows: &[(&str, u64, RangeDecision)]) {
    for (range, length, expected) in rows {
        assert_eq!(
            &get(range, *length),
            expected,
            "Range: {range} on {length} bytes"
        );
    }
}

use RangeDecision::{Multiple, Single, Unsatisfiable as Bad};
use Unsatisfiable::NoneSatisfiable;

fn whole(why: Whole) -> RangeDecision {
    RangeDecision::Whole(why)
}

fn malformed(range: &str) -> bool {
    matches!(
        get(range, 100),
        RangeDecision::Unsatisfiable(Unsatisfiable::Malformed(_))
    )
}

#[test]
fn a_byte_range_can_be_specified_by_first_and_last_position_inclusive() {
    table(&[
        ("bytes=0-0", 100, Single(r(0, 0))),
        ("bytes=0-499", 1000, Single(r(0, 499))),
        ("bytes=500-999", 1000, Single(r(500, 999))),
        ("bytes=99-99", 100, Single(r(99, 99))),
    ]);
}

#[test]
fn a_last_pos_past_the_end_is_replaced_by_one_less_than_the_length() {
    // §14.1.2: "If the last-pos value is absent, or if the value is greater than or equal to
    // the current length of the representation data, the byte range is interpreted as the
    // remainder of the representation".
    table(&[
        ("bytes=90-200", 100, Single(r(90, 99))),
        ("bytes=90-", 100, Single(r(90, 99))),
        ("bytes=0-99999999999999999999999", 100, Single(r(0, 99))),
        ("bytes=0-", 100, Single(r(0, 99))),
    ]);
}

#[test]
fn a_suffix_range_names_the_last_bytes_and_a_longer_one_the_whole_body() {
    table(&[
        ("bytes=-1", 100, Single(r(99, 99))),
        ("bytes=-10", 100, Single(r(90, 99))),
        ("bytes=-100", 100, Single(r(0, 99))),
        ("bytes=-500", 100, Single(r(0, 99))),
        ("bytes=-99999999999999999999999", 100, Single(r(0, 99))),
    ]);
}

#[test]
fn an_int_range_is_satisfiable_only_if_first_pos_is_less_than_the_length() {
    table(&[
        ("bytes=100-", 100, Bad(NoneSatisfiable)),
        ("bytes=100-200", 100, Bad(NoneSatisfiable)),
        ("bytes=99999999999999999999-", 100, Bad(NoneSatisfiable)),
        ("bytes=100-200,0-0", 100, Single(r(0, 0))),
    ]);
}

#[test]
fn a_suffix_range_is_satisfiable_only_with_a_non_zero_suffix_length() {
    table(&[
        ("bytes=-0", 100, Bad(NoneSatisfiable)),
        ("bytes=-0,-0", 100, Bad(NoneSatisfiable)),
        ("bytes=-0,5-5", 100, Single(r(5, 5))),
    ]);
}

#[test]
fn with_a_zero_length_body_only_a_suffix_range_is_satisfiable_and_it_names_no_byte() {
    table(&[
        ("bytes=0-0", 0, Bad(NoneSatisfiable)),
        ("bytes=0-", 0, Bad(NoneSatisfiable)),
        ("bytes=-0", 0, Bad(NoneSatisfiable)),
        ("bytes=-5", 0, whole(Whole::EmptyBody)),
        ("bytes=0-9,-5", 0, whole(Whole::EmptyBody)),
    ]);
}

#[test]
fn a_range_set_whose_last_pos_is_less_than_its_first_pos_is_invalid_so_416() {
    assert!(malformed("bytes=5-4"));
    assert!(malformed("bytes=0-1,9-3"));
}

#[test]
fn a_range_set_that_does_not_parse_is_416() {
    for range in [
        "bytes=--5",
        "bytes=-",
        "bytes=5",
        "bytes=1-2-3",
        "bytes=a-b",
        "bytes=+1-2",
        "bytes=0-1;x",
        "bytes=0 - 9",
        "bytes=0-1, x",
        "bytes=\u{00e9}-1",
    ] {
        assert!(malformed(range), "{range}");
    }
}

#[test]
fn recipients_accept_ows_and_empty_elements_in_a_list() {
    // §5.6.1: "a recipient MUST accept empty list elements"; OWS around elements.
    table(&[
        ("  bytes=0-0 ", 100, Single(r(0, 0))),
        ("bytes= 0-0 ,\t2-3", 100, Multiple(vec![r(0, 0), r(2, 3)])),
        ("bytes=,0-0,,", 100, Single(r(0, 0))),
    ]);
}

#[test]
fn range_units_are_case_insensitive() {
    table(&[
        ("BYTES=0-0", 100, Single(r(0, 0))),
        ("Bytes=0-0", 100, Single(r(0, 0))),
    ]);
}

#[test]
fn an_unknown_range_unit_is_ignored() {
    let ignored = |range: &str| matches!(get(range, 100), RangeDecision::Whole(Whole::Ignored(_)));
    for range in [
        "items=0-1",
        "bits=0-7",
        "bytes =0-1",
        "0-9",
        "bytes 0-9",
        "=0-9",
    ] {
        assert!(ignored(range), "{range}");
    }
}

#[test]
fn an_empty_bytes_range_set_is_ignored() {
    for range in ["bytes=", "bytes= ", "bytes=,", "bytes= , ,"] {
        assert_eq!(
            get(range, 100),
            whole(Whole::Ignored("bytes= names no range")),
            "{range}"
        );
    }
}

#[test]
fn several_satisfiable_ranges_are_served_in_the_order_asked() {
    // §14.2: "the server SHOULD send the parts in the same order that the corresponding
    // range-spec appeared in the received Range header field, excluding those ranges that
    // were deemed unsatisfiable".
    table(&[
        ("bytes=0-9,20-29", 100, Multiple(vec![r(0, 9), r(20, 29)])),
        ("bytes=50-59,0-9", 100, Multiple(vec![r(50, 59), r(0, 9)])),
        (
            "bytes=0-9,500-600,-5",
            100,
            Multiple(vec![r(0, 9), r(95, 99)]),
        ),
    ]);
}

#[test]
fn adjacent_ranges_do_not_overlap() {
    table(&[("bytes=0-9,10-19", 100, Multiple(vec![r(0, 9), r(10, 19)]))]);
}

#[test]
fn overlapping_ranges_get_the_whole_200() {
    table(&[
        ("bytes=0-9,9-19", 100, whole(Whole::Overlapping)),
        ("bytes=0-9,0-9", 100, whole(Whole::Overlapping)),
        ("bytes=50-,0-", 100, whole(Whole::Overlapping)),
        ("bytes=20-29,0-99", 100, whole(Whole::Overlapping)),
        // Overlap is judged after a suffix is resolved and a last-pos clamped.
        ("bytes=-5,0-9", 10, whole(Whole::Overlapping)),
        ("bytes=-5,0-9", 100, Multiple(vec![r(95, 99), r(0, 9)])),
        ("bytes=0-200,99-", 100, whole(Whole::Overlapping)),
    ]);
}

#[test]
fn more_than_sixteen_ranges_get_the_whole_200() {
    let specs = |n: u64| {
        let list: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
        format!("bytes={}", list.join(","))
    };
    assert!(matches!(get(&specs(16), 100), Multiple(v) if v.len() == 16));
    assert_eq!(get(&specs(17), 100), whole(Whole::TooMany));
    // Only satisfiable ranges count.
    let with_unsatisfiable = format!("{},200-300,400-", specs(16));
    assert!(matches!(get(&with_unsatisfiable, 100), Multiple(v) if v.len() == 16));
}

#[test]
fn a_server_must_ignore_a_range_on_a_method_other_than_get() {
    let c = conditions(Some("bytes=0-0"), None);
    let head = decide(&c, &Method::Head, &current(), 100, now());
    assert_eq!(head, whole(Whole::Head));
    let post = decide(&c, &Method::Other("POST".into()), &current(), 100, now());
    assert_eq!(post, whole(Whole::MethodNotGet));
    assert!(Whole::Head.accepts_ranges());
    assert!(!Whole::MethodNotGet.accepts_ranges());
}

fn with_if_range(if_range: &str, range: &str) -> RangeDecision {
    decide(
        &conditions(Some(range), Some(if_range)),
        &Method::Get,
        &current(),
        100,
        now(),
    )
}

fn if_range_fails(if_range: &str) -> bool {
    matches!(
        with_if_range(if_range, "bytes=0-0"),
        RangeDecision::Whole(Whole::IfRangeFailed(_))
    )
}

#[test]
fn if_range_with_a_strong_match_for_the_current_etag_serves_the_range() {
    assert_eq!(with_if_range(r#""abc""#, "bytes=0-0"), Single(r(0, 0)));
    assert_eq!(with_if_range(r#"  "abc" "#, "bytes=0-0"), Single(r(0, 0)));
}

#[test]
fn if_range_with_another_etag_sends_the_whole_200() {
    assert!(if_range_fails(r#""abd""#));
}

#[test]
fn if_range_with_a_weak_etag_never_matches() {
    // §13.1.5: "A client MUST NOT generate an If-Range header field containing an entity tag
    // that is marked as weak"; a strong comparison never matches a weak tag.
    assert!(if_range_fails(r#"W/"abc""#));
}

#[test]
fn if_range_compares_exactly_so_an_encoded_variants_tag_names_other_bytes() {
    // If-Match accepts "abc-gzip" for "abc"; here the bytes would come from another coding.
    assert!(if_range_fails(r#""abc-gzip""#));
    let gzip = Validators {
        etag: Some(EntityTag::strong("abc-gzip")),
        ..current()
    };
    let c = conditions(Some("bytes=0-0"), Some(r#""abc-gzip""#));
    assert_eq!(decide(&c, &Method::Get, &gzip, 100, now()), Single(r(0, 0)));
}

#[test]
fn if_range_with_an_http_date_equal_to_last_modified_serves_the_range() {
    assert_eq!(with_if_range(LM, "bytes=0-0"), Single(r(0, 0)));
    // The obsolete forms name the same second.
    assert_eq!(
        with_if_range("Tuesday, 14-Nov-23 22:13:20 GMT", "bytes=0-0"),
        Single(r(0, 0))
    );
}

#[test]
fn if_range_with_a_date_other_than_last_modified_sends_the_whole_200() {
    // §13.1.5: the date must be "an exact match", later is not enough.
    assert!(if_range_fails("Tue, 14 Nov 2023 22:13:21 GMT"));
    assert!(if_range_fails("Tue, 14 Nov 2023 22:13:19 GMT"));
}

#[test]
fn if_range_with_a_date_holds_only_when_last_modified_is_a_strong_validator() {
    // §8.8.2.2: Last-Modified is strong only when the representation cannot change twice in
    // its second; while that second lasts it can.
    let c = conditions(Some("bytes=0-0"), Some(LM));
    let in_that_second = at(T) + Duration::from_millis(500);
    assert!(matches!(
        decide(&c, &Method::Get, &current(), 100, in_that_second),
        RangeDecision::Whole(Whole::IfRangeFailed(_))
    ));
    assert_eq!(
        decide(&c, &Method::Get, &current(), 100, at(T + 1)),
        Single(r(0, 0))
    );
}

#[test]
fn an_unusable_if_range_sends_the_whole_200() {
    for value in ["garbage", r#""unterminated"#, r#""a", "b""#, "*", ""] {
        assert!(if_range_fails(value), "{value:?}");
    }
}

#[test]
fn if_range_without_validators_sends_the_whole_200() {
    let c = conditions(Some("bytes=0-0"), Some(r#""abc""#));
    let none = Validators::default();
    assert!(matches!(
        decide(&c, &Method::Get, &none, 100, now()),
        RangeDecision::Whole(Whole::IfRangeFailed(_))
    ));
    let c = conditions(Some("bytes=0-0"), Some(LM));
    assert!(matches!(
        decide(&c, &Method::Get, &none, 100, now()),
        RangeDecision::Whole(Whole::IfRangeFailed(_))
    ));
}

#[test]
fn a_server_must_ignore_if_range_without_range() {
    let c = conditions(None, Some(r#""zzz""#));
    assert_eq!(
        decide(&c, &Method::Get, &current(), 100, now()),
        whole(Whole::NoRange)
    );
}

#[test]
fn a_failed_if_range_means_ignore_the_range_even_a_malformed_one() {
    // §13.2.2 step 5: "otherwise, ignore the Range header field and respond 200 (OK)".
    assert!(matches!(
        with_if_range(r#""zzz""#, "bytes=9-1"),
        RangeDecision::Whole(Whole::IfRangeFailed(_))
    ));
    assert!(matches!(
        with_if_range(r#""abc""#, "bytes=9-1"),
        RangeDecision::Unsatisfiable(Unsatisfiable::Malformed(_))
    ));
    // An ignored unit stays ignored whatever If-Range says.
    assert!(matches!(
        with_if_range(r#""zzz""#, "items=0-1"),
        RangeDecision::Whole(Whole::Ignored(_))
    ));
}

#[test]
fn a_range_header_too_long_is_ignored() {
    let huge = format!("bytes=0-0{}", ",1-1".repeat(MAX_HEADER_BYTES / 4));
    assert_eq!(
        conditions(Some(&huge), None).range,
        RangeHeader::Ignored("value too long")
    );
}

// ---- rendering ----

fn head_200() -> ResponseHead {
    let mut head = ResponseHead::new(200);
    head.push("Content-Type", "application/pdf");
    head.push("ETag", r#""abc""#);
    head.push("Cache-Control", "public, max-age=60");
    head.push("Content-Length", "999");
    head
}

fn header<'a>(head: &'a ResponseHead, name: &str) -> Option<&'a str> {
    head.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

fn body(length: usize) -> Vec<u8> {
    (0..length).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn one_range_is_206_with_content_range_and_its_own_length() {
    let mut head = head_200();
    let out = render(&Single(r(2, 4)), &mut head, body(26));
    assert_eq!(out, b"cde");
    assert_eq!(
        (head.status, head.reason.as_str()),
        (206, "Partial Content")
    );
    assert_eq!(header(&head, "Content-Range"), Some("bytes 2-4/26"));
    assert_eq!(header(&head, "Content-Length"), Some("3"));
    assert_eq!(header(&head, "Content-Type"), Some("application/pdf"));
    assert_eq!(header(&head, "ETag"), Some(r#""abc""#));
    assert_eq!(header(&head, "Accept-Ranges"), Some("bytes"));
}

#[test]
fn several_ranges_are_multipart_byteranges_with_a_part_each() {
    let mut head = head_200();
    head.push("Content-Encoding", "gzip");
    let out = render(&Multiple(vec![r(0, 1), r(24, 25)]), &mut head, body(26));
    assert_eq!(head.status, 206);
    let content_type = header(&head, "Content-Type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap();
    assert!(boundary.len() <= 70);
    let expected = format!(
        "--{boundary}\r\nContent-Type: application/pdf\r\nContent-Encoding: gzip\r\n\
         Content-Range: bytes 0-1/26\r\n\r\nab\r\n--{boundary}\r\n\
         Content-Type: application/pdf\r\nContent-Encoding: gzip\r\n\
         Content-Range: bytes 24-25/26\r\n\r\nyz\r\n--{boundary}--\r\n"
    );
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    assert_eq!(
        header(&head, "Content-Length"),
        Some(&*out.len().to_string())
    );
    assert_eq!(
        head.get("Content-Encoding"),
        None,
        "the multipart body is not encoded"
    );
    assert_eq!(head.get("Content-Range"), None);
}

#[test]
fn the_boundary_does_not_occur_in_the_body() {
    let ranges = vec![r(0, 1), r(3, 4)];
    let mut head = head_200();
    let plain = render(&Multiple(ranges.clone()), &mut head, body(100));
    let first = header(&head, "Content-Type").unwrap().to_string();
    let boundary = first.rsplit('=').next().unwrap();
    // A body holding that very boundary gets another one.
    let mut hostile = body(100);
    hostile[10..10 + boundary.len()].copy_from_slice(boundary.as_bytes());
    let mut head = head_200();
    let out = render(&Multiple(ranges), &mut head, hostile.clone());
    let second = header(&head, "Content-Type").unwrap();
    assert_ne!(first, second);
    let other = second.rsplit('=').next().unwrap();
    assert!(!hostile.windows(other.len()).any(|w| w == other.as_bytes()));
    assert!(!plain.is_empty() && !out.is_empty());
}

#[test]
fn unsatisfiable_is_416_with_content_range_star_and_never_stored() {
    let mut head = head_200();
    head.push("Set-Cookie", "s=1");
    head.push("Content-Encoding", "gzip");
    head.push("Expires", "Tue, 14 Nov 2023 22:14:20 GMT");
    let out = render(&Bad(NoneSatisfiable), &mut head, body(26));
    assert_eq!(
        (head.status, head.reason.as_str()),
        (416, "Range Not Satisfiable")
    );
    assert_eq!(header(&head, "Content-Range"), Some("bytes */26"));
    assert_eq!(header(&head, "Cache-Control"), Some("no-store"));
    assert_eq!(head.get("Expires"), None);
    assert_eq!(head.get("Content-Encoding"), None);
    assert_eq!(header(&head, "Set-Cookie"), Some("s=1"), "the script ran");
    assert_eq!(
        header(&head, "Content-Length"),
        Some(&*out.len().to_string())
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("416 Range Not Satisfiable")
    );
}

#[test]
fn a_whole_200_that_ranges_could_apply_to_says_accept_ranges_bytes() {
    for why in [
        Whole::NoRange,
        Whole::Overlapping,
        Whole::TooMany,
        Whole::Head,
    ] {
        let mut head = head_200();
        let out = render(&whole(why), &mut head, body(26));
        assert_eq!(out, body(26));
        assert_eq!(head.status, 200);
        assert_eq!(header(&head, "Accept-Ranges"), Some("bytes"), "{why:?}");
        assert_eq!(header(&head, "Content-Length"), Some("26"));
    }
    let mut head = head_200();
    render(&whole(Whole::MethodNotGet), &mut head, body(26));
    assert_eq!(head.get("Accept-Ranges"), None);
}

#[test]
fn respond_reads_if_range_against_the_heads_own_validators_and_only_ranges_a_200() {
    let request = |if_range: &str| {
        Request::new(vec![
            (b"REQUEST_METHOD".to_vec(), b"GET".to_vec()),
            (b"HTTP_RANGE".to_vec(), b"bytes=0-2".to_vec()),
            (b"HTTP_IF_RANGE".to_vec(), if_range.as_bytes().to_vec()),
        ])
    };
    let mut head = head_200();
    let ranged = respond(&request(r#""abc""#), now(), &mut head, body(26));
    assert_eq!(
        (ranged.decision, ranged.body),
        (Single(r(0, 2)), b"abc".to_vec())
    );
    let mut head = head_200();
    let ranged = respond(&request(r#""old""#), now(), &mut head, body(26));
    assert!(matches!(
        ranged.decision,
        RangeDecision::Whole(Whole::IfRangeFailed(_))
    ));
    assert_eq!(ranged.body.len(), 26);
    let mut head = head_200();
    head.status = 404;
    let ranged = respond(&request(r#""abc""#), now(), &mut head, body(26));
    assert_eq!(ranged.decision, whole(Whole::StatusNotOk));
    assert_eq!((head.status, head.get("Accept-Ranges")), (404, None));
    let mut head = head_200();
    head.status = 304;
    respond(&request(r#""abc""#), now(), &mut head, Vec::new());
    assert_eq!(
        header(&head, "Content-Length"),
        Some("999"),
        "untouched on a 304"
    );
}

#[test]
fn a_decision_made_for_another_length_sends_the_whole_body() {
    let mut head = head_200();
    let out = render(&Single(r(0, 99)), &mut head, body(26));
    assert_eq!((head.status, out.len()), (200, 26));
}

// ---- properties ----

fn spec() -> impl Strategy<Value = RangeSpec> {
    prop_oneof![
        (0u64..300, proptest::option::of(0u64..300)).prop_map(|(first, last)| RangeSpec::From {
            first,
            last: last.map(|l| l.max(first)),
        }),
        (0u64..300).prop_map(RangeSpec::Suffix),
    ]
}

/// The parts of a multipart body, as (Content-Range, bytes), split by the boundary.
fn parts(out: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let text = out.to_vec();
    let mut found = Vec::new();
    let mut at = 0;
    let find = |from: usize, needle: &[u8]| {
        text[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    while let Some(start) = find(at, delimiter.as_bytes()) {
        let after = start + delimiter.len();
        if text[after..].starts_with(b"--") {
            break;
        }
        let headers_end = find(after, b"\r\n\r\n").unwrap() + 4;
        let next = find(headers_end, format!("\r\n{delimiter}").as_bytes()).unwrap();
        let headers = String::from_utf8_lossy(&text[after..headers_end]).into_owned();
        let range = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_string();
        found.push((range, text[headers_end..next].to_vec()));
        at = next + 2;
    }
    found
}

proptest! {
    #[test]
    fn any_decided_range_lies_within_the_body(
        specs in proptest::collection::vec(spec(), 1..20),
        length in 0u64..300,
    ) {
        match resolve(&specs, length) {
            Single(range) => prop_assert!(range.first <= range.last && range.last < length),
            Multiple(ranges) => {
                prop_assert!((2..=MAX_RANGES).contains(&ranges.len()));
                for (i, a) in ranges.iter().enumerate() {
                    prop_assert!(a.first <= a.last && a.last < length);
                    for b in &ranges[i + 1..] {
                        prop_assert!(!a.overlaps(*b));
                    }
                }
            }
            RangeDecision::Unsatisfiable(_) => {
                prop_assert!(specs.iter().all(|s| s.resolve(length).is_none()));
            }
            RangeDecision::Whole(_) => {}
        }
    }

    #[test]
    fn multipart_parts_are_the_requested_bytes_in_order(
        specs in proptest::collection::vec(spec(), 2..8),
        length in 1usize..300,
    ) {
        let content = body(length);
        let decision = resolve(&specs, length as u64);
        let mut head = head_200();
        let out = render(&decision, &mut head, content.clone());
        match decision {
            Multiple(ranges) => {
                let content_type = header(&head, "Content-Type").unwrap().to_string();
                let boundary = content_type.rsplit('=').next().unwrap();
                let found = parts(&out, boundary);
                prop_assert_eq!(found.len(), ranges.len());
                for (range, (content_range, bytes)) in ranges.iter().zip(found) {
                    prop_assert_eq!(content_range, range.content_range(length));
                    let want = &content[range.first as usize..=range.last as usize];
                    prop_assert_eq!(bytes.as_slice(), want);
                }
            }
            Single(range) => {
                prop_assert_eq!(&out[..], &content[range.first as usize..=range.last as usize]);
            }
            _ => {}
        }
        prop_assert_eq!(header(&head, "Content-Length").map(str::to_string), Some(out.len().to_string()));
    }

    #[test]
    fn parsing_any_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_range(&raw);
        let _ = parse_if_range(&raw);
    }

    #[test]
    fn a_spec_round_trips_through_its_text(spec in spec()) {
        prop_assert_eq!(parse_range(format!("bytes={spec}").as_bytes()), RangeHeader::Bytes(vec![spec]));
    }
}

#[test]
fn if_range_parses_tags_and_dates() {
    assert_eq!(
        parse_if_range(br#""abc""#),
        Header::Value(IfRange::Tag(EntityTag::strong("abc")))
    );
    assert_eq!(
        parse_if_range(LM.as_bytes()),
        Header::Value(IfRange::Date(at(T)))
    );
    assert!(matches!(parse_if_range(br#"W/"abc""#), Header::Value(IfRange::Tag(t)) if t.weak));
}
