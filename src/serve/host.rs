//! Which host a request is for, and the request-target forms an origin server must handle
//! itself (RFC 9112 §3.2): hyper parses them but leaves these decisions to its user.

use hyper::header::HOST;
use hyper::http::uri::Authority;
use hyper::{HeaderMap, Method, Uri, Version};

use super::route::Refusal;

/// What the head says about the request's target, before any script is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An origin-form (or absolute-form) request for a path: route it. `host` is the
    /// authority the request is for, `None` for an HTTP/1.0 request without one.
    Path { host: Option<String> },
    /// `OPTIONS *` (RFC 9110 §9.3.7): about the server, answered by it.
    ServerOptions,
}

/// Checks the head's Host and target (RFC 9112 §3.2, §3.2.2–§3.2.4):
/// - 400 for an HTTP/1.1 request without Host, more than one Host line, or an invalid value;
/// - for an absolute-form target, its authority wins over Host;
/// - `CONNECT` is 501: this is no proxy, and a 2xx to it would turn the connection into a
///   tunnel (RFC 9110 §9.3.6).
pub fn check(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<Target, Refusal> {
    if method == Method::CONNECT {
        return Err(Refusal {
            status: 501,
            reason: "CONNECT is not supported: this is no proxy",
        });
    }
    let mut lines = headers.get_all(HOST).iter();
    let host = match (lines.next(), lines.next()) {
        (Some(_), Some(_)) => return Err(bad("more than one Host header")),
        (Some(value), None) => {
            Some(valid_host(value.as_bytes()).ok_or(bad("invalid Host header"))?)
        }
        (None, _) if version == Version::HTTP_11 => return Err(bad("no Host header")),
        (None, _) => None,
    };
    if uri.path() == "*" && uri.authority().is_none() {
        return match method == Method::OPTIONS {
            true => Ok(Target::ServerOptions),
            false => Err(bad("'*' is a target for OPTIONS only")),
        };
    }
    // RFC 9112 §3.2.2: "the origin server MUST ignore the received Host header field (if
    // any) and instead use the host information of the request-target".
    let host = match uri.authority() {
        Some(authority) => Some(
            valid_host(authority.as_str().as_bytes())
                .ok_or(bad("invalid authority in the request target"))?,
        ),
        None => host,
    };
    Ok(Target::Path { host })
}

fn bad(reason: &'static str) -> Refusal {
    Refusal {
        status: 400,
        reason,
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): no userinfo, no path, a port of digits. An empty
/// value is allowed by the grammar (`Host:` for a URI without authority) and kept empty.
fn valid_host(value: &[u8]) -> Option<String> {
    if value.is_empty() {
        return Some(String::new());
    }
    let authority = Authority::try_from(value).ok()?;
    let text = authority.as_str();
    if text.contains('@') || authority.host().is_empty() {
        return None;
    }
    if let Some((_, port)) = text.rsplit_once(':').filter(|_| !text.ends_with(']'))
        && !port.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: &str, uri: &str, version: Version, hosts: &[&str]) -> Result<Target, u16> {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(HOST, host.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        check(&method, &uri.parse().unwrap(), version, &headers).map_err(|r| r.status)
    }

    /// Method, target, version, Host lines, expected answer.
    type Row = (
        &'static str,
        &'static str,
        Version,
        &'static [&'static str],
        Result<Target, u16>,
    );

    fn host(h: &str) -> Result<Target, u16> {
        Ok(Target::Path {
            host: Some(h.to_string()),
        })
    }

    #[test]
    fn rfc_9112_3_2_host_rules() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        let rows: &[Row] = &[
            // "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
            // request message that lacks a Host header field"
            ("GET", "/p", HTTP_11, &[], Err(400)),
            // "and to any request message that contains more than one Host header field line"
            ("GET", "/p", HTTP_11, &["a", "a"], Err(400)),
            ("GET", "/p", HTTP_10, &["a", "b"], Err(400)),
            // "or a Host header field with an invalid field value."
            ("GET", "/p", HTTP_11, &["user@a"], Err(400)),
            ("GET", "/p", HTTP_11, &["a:port"], Err(400)),
            ("GET", "/p", HTTP_11, &["a/b"], Err(400)),
            (
                "GET",
                "/p",
                HTTP_11,
                &["example.org:8080"],
                host("example.org:8080"),
            ),
            ("GET", "/p", HTTP_11, &["[::1]:80"], host("[::1]:80")),
            ("GET", "/p", HTTP_10, &[], Ok(Target::Path { host: None })),
            // §3.2.2: the absolute-form's authority wins over Host.
            (
                "GET",
                "http://t.example:81/p",
                HTTP_11,
                &["other"],
                host("t.example:81"),
            ),
            ("GET", "http://u@t.example/p", HTTP_11, &["other"], Err(400)),
            // §3.2.4: asterisk-form only for OPTIONS.
            ("OPTIONS", "*", HTTP_11, &["a"], Ok(Target::ServerOptions)),
            ("GET", "*", HTTP_11, &["a"], Err(400)),
            // RFC 9110 §9.3.6: no tunnels.
            (
                "CONNECT",
                "t.example:443",
                HTTP_11,
                &["t.example:443"],
                Err(501),
            ),
        ];
        for (method, uri, version, hosts, expected) in rows {
            assert_eq!(
                &target(method, uri, *version, hosts),
                expected,
                "{method} {uri} {version:?} Host {hosts:?}"
            );
        }
    }
}
