//! The request as a CGI program sees it: environment variables (RFC 3875 §4.1).
//!
//! Both front ends build one of these: CGI mode from the process environment, FastCGI mode from
//! FCGI_PARAMS. Names and values are bytes, because nginx passes non-UTF-8 URL bytes through.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::SystemTime;

use crate::etag::EtagList;
use crate::timestamp::parse_http_date;

/// Request header values longer than this are treated as absent.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The request method (RFC 9110 §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// Any other method, as sent.
    Other(String),
}

impl Method {
    /// Parses REQUEST_METHOD; a missing method is GET (a CGI script run by hand).
    pub fn parse(raw: Option<&[u8]>) -> Self {
        match raw {
            None | Some(b"GET") => Method::Get,
            Some(b"HEAD") => Method::Head,
            Some(other) => Method::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// GET or HEAD: the methods a 304 applies to (RFC 9110 §13.2.2 steps 3 and 4).
    pub fn is_get_or_head(&self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }

    /// The method's name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(name) => name,
        }
    }
}

/// A request: its CGI meta-variables in the order received.
#[derive(Debug, Clone, Default)]
pub struct Request {
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Request {
    /// A request from meta-variables (name, value).
    pub fn new(vars: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Request { vars }
    }

    /// A request from the current process environment (CGI mode).
    pub fn from_process_env() -> Self {
        let vars = std::env::vars_os()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        Request { vars }
    }

    /// The value of a meta-variable; the last one wins when a name repeats.
    pub fn var(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// A meta-variable as UTF-8 text, `None` when absent or not UTF-8.
    pub fn var_str(&self, name: &str) -> Option<&str> {
        self.var(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A request header by its CGI name (`HTTP_IF_NONE_MATCH`); huge values count as absent.
    pub fn header(&self, cgi_name: &str) -> Option<&[u8]> {
        self.var(cgi_name).filter(|v| v.len() <= MAX_HEADER_BYTES)
    }

    /// REQUEST_METHOD.
    pub fn method(&self) -> Method {
        Method::parse(self.var("REQUEST_METHOD"))
    }

    /// QUERY_STRING, empty when absent.
    pub fn query(&self) -> &[u8] {
        self.var("QUERY_STRING").unwrap_or_default()
    }

    /// All meta-variables, in order.
    pub fn vars(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.vars
    }

    /// The environment a script is run with: the request's variables less `HTTP_PROXY`
    /// (httpoxy), with `REDIRECT_STATUS=200` when absent (php-cgi's force-redirect check),
    /// then `extra` added or replacing.
    pub fn script_env(&self, extra: &[(&str, OsString)]) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = self
            .vars
            .iter()
            .filter(|(k, _)| k != b"HTTP_PROXY")
            .filter(|(k, _)| !extra.iter().any(|(name, _)| k == name.as_bytes()))
            .map(|(k, v)| (OsString::from_vec(k.clone()), OsString::from_vec(v.clone())))
            .collect();
        if self.var("REDIRECT_STATUS").is_none() {
            env.push(("REDIRECT_STATUS".into(), "200".into()));
        }
        for (name, value) in extra {
            env.push((name.into(), value.clone()));
        }
        env
    }

    /// Length of the request body announced by the server (CONTENT_LENGTH).
    pub fn content_length(&self) -> Option<u64> {
        self.var_str("CONTENT_LENGTH")?.trim().parse().ok()
    }

    /// Whether the server announced no body (every GET through nginx).
    pub fn announces_no_body(&self) -> bool {
        no_body_announced(self.var("CONTENT_LENGTH"))
    }
}

/// Whether a CONTENT_LENGTH value says there is no body: absent, empty or 0.
pub fn no_body_announced(content_length: Option<&[u8]>) -> bool {
    content_length.is_none_or(|value| {
        let value = value.trim_ascii();
        value.is_empty() || value.iter().all(|&b| b == b'0')
    })
}

/// How a conditional request header was understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header<T> {
    /// Not sent.
    Absent,
    /// Sent but unusable; treated as absent (or, for If-Match, as matching nothing).
    Ignored(&'static str),
    /// Parsed value.
    Value(T),
}

impl<T> Header<T> {
    /// The parsed value, if any.
    pub fn value(&self) -> Option<&T> {
        match self {
            Header::Value(v) => Some(v),
            _ => None,
        }
    }

    /// Sent at all, parseable or not.
    pub fn is_sent(&self) -> bool {
        !matches!(self, Header::Absent)
    }
}

/// The four precondition headers of RFC 9110 §13.1, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    /// If-Match (§13.1.1).
    pub if_match: Header<EtagList>,
    /// If-None-Match (§13.1.2).
    pub if_none_match: Header<EtagList>,
    /// If-Modified-Since (§13.1.3).
    pub if_modified_since: Header<SystemTime>,
    /// If-Unmodified-Since (§13.1.4).
    pub if_unmodified_since: Header<SystemTime>,
}

impl Conditions {
    /// Reads the headers from a request; `now` decides which If-Modified-Since dates are in
    /// the future (and so ignored).
    pub fn from_request(request: &Request, now: SystemTime) -> Self {
        let etags = |name: &str| match request.var(name) {
            None => Header::Absent,
            Some(raw) if raw.len() > MAX_HEADER_BYTES => Header::Ignored("value too long"),
            Some(raw) => match EtagList::parse(raw) {
                Some(list) => Header::Value(list),
                None => Header::Ignored("malformed entity-tag list"),
            },
        };
        let date = |name: &str| match request.var(name) {
            None => Header::Absent,
            Some(raw) => match parse_http_date(raw) {
                Some(time) => Header::Value(time),
                None => Header::Ignored("not a valid HTTP-date"),
            },
        };
        let if_modified_since = match date("HTTP_IF_MODIFIED_SINCE") {
            Header::Value(time) if time > now => Header::Ignored("date is in the future"),
            other => other,
        };
        Conditions {
            if_match: etags("HTTP_IF_MATCH"),
            if_none_match: etags("HTTP_IF_NONE_MATCH"),
            if_modified_since,
            if_unmodified_since: date("HTTP_IF_UNMODIFIED_SINCE"),
        }
    }

    /// No conditional header at all.
    pub fn is_empty(&self) -> bool {
        !(self.if_match.is_sent()
            || self.if_none_match.is_sent()
            || self.if_modified_since.is_sent()
            || self.if_unmodified_since.is_sent())
    }
}

/// Value of one cookie in a `Cookie:` header (RFC 6265 §5.4), first occurrence.
pub fn cookie<'a>(cookie_header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    cookies(cookie_header).find_map(|(n, value)| (n == name.as_bytes()).then_some(value))
}

/// Every `name=value` pair of a Cookie header (RFC 6265 §5.4), in order; pairs without `=`
/// are skipped.
pub fn cookies(cookie_header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    cookie_header.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// Decodes `%XX` escapes (RFC 3986 §2.1); `None` when a `%` is not followed by two hex digits.
pub fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
            let (high, low) = (hex(tail.first())?, hex(tail.get(1))?);
            out.push(u8::try_from(high * 16 + low).ok()?);
            rest = tail.get(2..).unwrap_or_default();
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn req(vars: &[(&str, &[u8])]) -> Request {
        Request::new(
            vars.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn script_env_drops_http_proxy_and_adds_redirect_status() {
        let r = req(&[("HTTP_PROXY", b"evil:1"), ("PATH_INFO", b"/x")]);
        let env = r.script_env(&[("CONDITIONAL_PROBE", "1".into())]);
        assert!(!env.iter().any(|(k, _)| k == "HTTP_PROXY"));
        assert!(
            env.iter()
                .any(|(k, v)| k == "REDIRECT_STATUS" && v == "200")
        );
        assert!(
            env.iter()
                .any(|(k, v)| k == "CONDITIONAL_PROBE" && v == "1")
        );
    }

    #[test]
    fn existing_redirect_status_is_kept() {
        let r = req(&[("REDIRECT_STATUS", b"404")]);
        let env = r.script_env(&[]);
        let statuses: Vec<_> = env.iter().filter(|(k, _)| k == "REDIRECT_STATUS").collect();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].1, "404");
    }

    #[test]
    fn future_if_modified_since_is_ignored() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let r = req(&[("HTTP_IF_MODIFIED_SINCE", b"Sun, 06 Nov 2050 08:49:37 GMT")]);
        let c = Conditions::from_request(&r, now);
        assert!(matches!(c.if_modified_since, Header::Ignored(_)));
    }

    #[test]
    fn huge_and_broken_headers_are_ignored_not_fatal() {
        let huge = vec![b'"'; MAX_HEADER_BYTES + 10];
        let r = req(&[
            ("HTTP_IF_NONE_MATCH", &huge),
            ("HTTP_IF_MATCH", b"\xff\xfe"),
            ("HTTP_IF_UNMODIFIED_SINCE", b"\xff"),
        ]);
        let c = Conditions::from_request(&r, SystemTime::now());
        assert!(matches!(c.if_none_match, Header::Ignored(_)));
        assert!(matches!(c.if_match, Header::Ignored(_)));
        assert!(matches!(c.if_unmodified_since, Header::Ignored(_)));
    }

    #[test]
    fn cookie_lookup() {
        let h = b"a=1; PHPSESSID=abc123 ; b=2";
        assert_eq!(cookie(h, "PHPSESSID"), Some(&b"abc123"[..]));
        assert_eq!(cookie(h, "missing"), None);
        assert_eq!(cookie(b"PHPSESSIDX=1", "PHPSESSID"), None);
    }
}
