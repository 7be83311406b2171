//! Points in time as they arrive in requests, sidecars and probe answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, the obsolete RFC 850 form and asctime.
///
/// Old Internet Explorer appends `; length=N` to If-Modified-Since; anything after a `;` is
/// ignored. Non-UTF-8 bytes or an unparseable date give `None`, which callers treat as absent.
pub fn parse_http_date(raw: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(raw).ok()?;
    let date = text.split(';').next()?.trim();
    if date.is_empty() || date.len() > 64 {
        return None;
    }
    httpdate::parse_http_date(date).ok()
}

/// Formats a time as an IMF-fixdate (RFC 9110 §5.6.7), at whole-second precision.
pub fn format_http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// Parses a last-modified time as a sidecar or a probe gives it: unix seconds, an HTTP-date,
/// or RFC 3339.
pub fn parse_flexible(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return from_unix(seconds);
    }
    if let Some(time) = parse_http_date(text.as_bytes()) {
        return Some(time);
    }
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    from_unix(parsed.unix_timestamp())
}

/// A unix timestamp as a `SystemTime`; times before 1970 are not meaningful validators.
pub fn from_unix(seconds: i64) -> Option<SystemTime> {
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Whole unix seconds of a time (0 for times before 1970).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drops sub-second precision: HTTP dates carry whole seconds, so comparisons must too.
pub fn truncate_to_second(time: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUNDAY: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn all_three_http_date_formats_are_accepted() {
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(text.as_bytes()), Some(at(SUNDAY)), "{text}");
        }
    }

    #[test]
    fn internet_explorer_length_suffix_is_tolerated() {
        let raw = b"Sun, 06 Nov 1994 08:49:37 GMT; length=1234";
        assert_eq!(parse_http_date(raw), Some(at(SUNDAY)));
    }

    #[test]
    fn garbage_and_non_utf8_dates_are_none() {
        assert_eq!(parse_http_date(b"yesterday"), None);
        assert_eq!(parse_http_date(b"\xff\xfe"), None);
        assert_eq!(parse_http_date(b""), None);
        assert_eq!(parse_http_date("x".repeat(10_000).as_bytes()), None);
    }

    #[test]
    fn flexible_accepts_unix_http_date_and_rfc3339() {
        assert_eq!(parse_flexible("784111777"), Some(at(SUNDAY)));
        assert_eq!(
            parse_flexible("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(at(SUNDAY))
        );
        assert_eq!(parse_flexible("1994-11-06T08:49:37Z"), Some(at(SUNDAY)));
        assert_eq!(
            parse_flexible("1994-11-06T09:49:37+01:00"),
            Some(at(SUNDAY))
        );
        assert_eq!(parse_flexible("-5"), None);
        assert_eq!(parse_flexible("soon"), None);
    }

    #[test]
    fn formatting_is_imf_fixdate() {
        assert_eq!(
            format_http_date(at(SUNDAY)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
