//! URL path → script under the root, and the CGI meta-variables for it (RFC 3875 §4.1), as
//! nginx's `fastcgi_split_path_info` and `fastcgi_params` would give them to the FastCGI mode.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hyper::{HeaderMap, Method, Uri, Version};

use crate::request::percent_decode;

/// Why a URL path names no script; answered without involving the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 403 or 404.
    pub status: u16,
    /// The short text sent to the client and logged.
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// A script found for a URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// SCRIPT_FILENAME: the root joined with the segments that name the script.
    pub script: PathBuf,
    /// SCRIPT_NAME: `/` and the decoded segments that name the script.
    pub script_name: Vec<u8>,
    /// PATH_INFO: the decoded rest of the path, empty when nothing follows the script.
    pub path_info: Vec<u8>,
}

/// Finds the script for `raw_path` (still percent-encoded) under `root` (a canonical path):
/// the first decoded segment that is a regular file; the segments after it are PATH_INFO.
/// `..` (encoded or not) is refused with 403, an encoded `/` or NUL with 404, and a folder
/// whose real path leaves the root with 403. A folder itself is 404 (no index files).
pub fn locate(root: &Path, raw_path: &[u8]) -> Result<Located, Refusal> {
    if raw_path.first() != Some(&b'/') {
        return Err(refuse(400, "the request target is not an absolute path"));
    }
    let mut segments = Vec::new();
    for raw in raw_path.split(|&b| b == b'/') {
        let segment = percent_decode(raw).ok_or(refuse(400, "malformed percent-encoding"))?;
        match segment.as_slice() {
            b"" | b"." => {}
            b".." => return Err(refuse(403, "'..' in the path")),
            s if s.contains(&b'/') || s.contains(&0) => {
                return Err(refuse(404, "encoded '/' or NUL in the path"));
            }
            _ => segments.push(segment),
        }
    }
    let trailing_slash = raw_path.len() > 1 && raw_path.ends_with(b"/");
    let mut path = root.to_path_buf();
    for (i, segment) in segments.iter().enumerate() {
        path.push(OsStr::from_bytes(segment));
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(refuse(403, "permission denied"));
            }
            Err(_) => return Err(refuse(404, "no such script")),
        };
        if meta.is_file() {
            let rest = &segments[i + 1..];
            let mut path_info = Vec::new();
            for s in rest {
                path_info.push(b'/');
                path_info.extend_from_slice(s);
            }
            if trailing_slash {
                path_info.push(b'/');
            }
            return Ok(Located {
                script: path,
                script_name: join_segments(&segments[..=i]),
                path_info,
            });
        }
        if !meta.is_dir() {
            return Err(refuse(404, "not a regular file"));
        }
        // A symlinked folder may lead out of the root: stop here rather than probe outside.
        match std::fs::canonicalize(&path) {
            Ok(real) if real.starts_with(root) => {}
            _ => return Err(refuse(403, "the path leads outside the root")),
        }
    }
    Err(refuse(
        404,
        "no script at this path (folders have no index)",
    ))
}

fn join_segments(segments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    out
}

/// The parts of an HTTP request the CGI variables are made of.
pub struct Incoming<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The authority the request is for ([`super::host::check`]): the absolute-form target's,
    /// else Host's; `None` for an HTTP/1.0 request without Host.
    pub host: Option<&'a str>,
    /// The bytes of the body as read in full; `None` without a body.
    pub content_length: Option<u64>,
    /// Our end of the connection.
    pub local: SocketAddr,
    /// The client's end.
    pub remote: SocketAddr,
}

/// The CGI meta-variables for a located script (RFC 3875 §4.1): what nginx's `fastcgi_params`
/// passes. Header values keep their bytes; a repeated header is joined with `, ` (`; ` for
/// Cookie, RFC 6265 §5.4). Header names with `_` are dropped, as nginx does by default, so
/// `X_Forwarded_For` cannot pose as `X-Forwarded-For`. CONTENT_LENGTH is the length of the
/// body as read (RFC 3875 §4.1.2), so Transfer-Encoding, which no longer describes it, is not
/// passed; HTTP_HOST and SERVER_NAME come from the request's authority.
pub fn cgi_vars(root: &Path, located: &Located, request: &Incoming<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(24 + request.headers.keys_len());
    let mut set = |name: &str, value: &[u8]| vars.push((name.as_bytes().to_vec(), value.to_vec()));
    let uri = request.uri;
    let query = uri.query().unwrap_or("");
    let request_uri = uri
        .path_and_query()
        .map_or_else(|| uri.path(), |pq| pq.as_str());
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes());
    set("SERVER_PROTOCOL", protocol(request.version).as_bytes());
    set("REQUEST_METHOD", request.method.as_str().as_bytes());
    set("REQUEST_URI", request_uri.as_bytes());
    set("REQUEST_SCHEME", b"http");
    set("QUERY_STRING", query.as_bytes());
    set("DOCUMENT_ROOT", root.as_os_str().as_bytes());
    set("SCRIPT_FILENAME", located.script.as_os_str().as_bytes());
    set("SCRIPT_NAME", &located.script_name);
    set("PATH_INFO", &located.path_info);
    if !located.path_info.is_empty() {
        let mut translated = root.as_os_str().as_bytes().to_vec();
        translated.extend_from_slice(&located.path_info);
        set("PATH_TRANSLATED", &translated);
    }
    let server_name = request
        .host
        .map(host_without_port)
        .filter(|h| !h.is_empty())
        .map_or_else(|| request.local.ip().to_string(), str::to_string);
    set("SERVER_NAME", server_name.as_bytes());
    set("SERVER_ADDR", request.local.ip().to_string().as_bytes());
    set("SERVER_PORT", request.local.port().to_string().as_bytes());
    set("REMOTE_ADDR", request.remote.ip().to_string().as_bytes());
    set("REMOTE_PORT", request.remote.port().to_string().as_bytes());
    if let Some(length) = request.content_length {
        set("CONTENT_LENGTH", length.to_string().as_bytes());
    }
    if let Some(host) = request.host {
        set("HTTP_HOST", host.as_bytes());
    }
    if let Some(kind) = request.headers.get(hyper::header::CONTENT_TYPE) {
        set("CONTENT_TYPE", kind.as_bytes());
    }
    for name in request.headers.keys() {
        if name == hyper::header::CONTENT_LENGTH
            || name == hyper::header::CONTENT_TYPE
            || name == hyper::header::TRANSFER_ENCODING
            || name == hyper::header::HOST
            || name.as_str().contains('_')
        {
            continue;
        }
        let separator: &[u8] = if name == hyper::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let mut value = Vec::new();
        for (i, part) in request.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(separator);
            }
            value.extend_from_slice(part.as_bytes());
        }
        let cgi_name = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        set(&cgi_name, &value);
    }
    vars
}

/// SERVER_SOFTWARE.
pub const SERVER_SOFTWARE: &str = concat!("http-conditional/", env!("CARGO_PKG_VERSION"));

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// `example.org:8080` → `example.org`; `[::1]:8080` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Root(PathBuf);

    impl Root {
        fn new(label: &str) -> Root {
            let dir = std::env::temp_dir().join(format!("hc-route-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
            for file in ["page.cgi", "sub/inner.cgi"] {
                std::fs::write(dir.join(file), "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
            Root(std::fs::canonicalize(dir).unwrap())
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn status(root: &Root, path: &str) -> u16 {
        locate(&root.0, path.as_bytes()).map_or_else(|r| r.status, |_| 200)
    }

    #[test]
    fn first_file_is_the_script_and_the_rest_is_path_info() {
        let root = Root::new("split");
        let found = locate(&root.0, b"/sub/inner.cgi/a%20b/c/").unwrap();
        assert_eq!(found.script, root.0.join("sub/inner.cgi"));
        assert_eq!(found.script_name, b"/sub/inner.cgi");
        assert_eq!(found.path_info, b"/a b/c/");
        let plain = locate(&root.0, b"/page.cgi").unwrap();
        assert_eq!(plain.path_info, b"");
        let merged = locate(&root.0, b"//./page.cgi").unwrap();
        assert_eq!(merged.script_name, b"/page.cgi");
    }

    #[test]
    fn escapes_are_refused() {
        let root = Root::new("escape");
        assert_eq!(status(&root, "/../etc/passwd"), 403);
        assert_eq!(status(&root, "/sub/%2e%2e/%2E%2E/etc/passwd"), 403);
        assert_eq!(status(&root, "/sub%2finner.cgi"), 404);
        assert_eq!(status(&root, "/page.cgi%00"), 404);
        assert_eq!(status(&root, "/page.cgi/../../x"), 403);
        assert_eq!(status(&root, "/bad%zz"), 400);
        assert_eq!(status(&root, "*"), 400);
    }

    #[test]
    fn folders_and_missing_files_are_404() {
        let root = Root::new("missing");
        assert_eq!(status(&root, "/"), 404);
        assert_eq!(status(&root, "/sub/"), 404);
        assert_eq!(status(&root, "/sub/deeper"), 404);
        assert_eq!(status(&root, "/nothing.cgi"), 404);
    }

    #[test]
    fn symlinked_folder_outside_the_root_is_403() {
        let root = Root::new("symlink");
        std::os::unix::fs::symlink("/usr", root.0.join("out")).unwrap();
        assert_eq!(status(&root, "/out/bin/env"), 403);
    }

    #[test]
    fn headers_become_http_variables() {
        let root = Root::new("vars");
        let located = locate(&root.0, b"/page.cgi/x").unwrap();
        let mut headers = HeaderMap::new();
        headers.append("accept", "text/html".parse().unwrap());
        headers.append("accept", "*/*".parse().unwrap());
        headers.append("cookie", "a=1".parse().unwrap());
        headers.append("cookie", "b=2".parse().unwrap());
        headers.append("x_sneaky", "1".parse().unwrap());
        headers.append("host", "example.org:8080".parse().unwrap());
        headers.append(
            "x-raw",
            hyper::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        headers.append("content-length", "3".parse().unwrap());
        headers.append("transfer-encoding", "chunked".parse().unwrap());
        let uri: Uri = "/page.cgi/x?q=1&r".parse().unwrap();
        let vars = cgi_vars(
            &root.0,
            &located,
            &Incoming {
                method: &Method::POST,
                uri: &uri,
                version: Version::HTTP_11,
                headers: &headers,
                host: Some("example.org:8080"),
                content_length: Some(3),
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: "127.0.0.1:5555".parse().unwrap(),
            },
        );
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("HTTP_ACCEPT").unwrap(), b"text/html, */*");
        assert_eq!(get("HTTP_COOKIE").unwrap(), b"a=1; b=2");
        assert_eq!(get("HTTP_X_RAW").unwrap(), b"caf\xe9");
        assert_eq!(get("HTTP_X_SNEAKY"), None);
        assert_eq!(get("HTTP_CONTENT_LENGTH"), None);
        assert_eq!(get("CONTENT_LENGTH").unwrap(), b"3");
        assert_eq!(get("SERVER_NAME").unwrap(), b"example.org");
        assert_eq!(get("HTTP_HOST").unwrap(), b"example.org:8080");
        assert_eq!(get("HTTP_TRANSFER_ENCODING"), None);
        assert_eq!(get("QUERY_STRING").unwrap(), b"q=1&r");
        assert_eq!(get("REQUEST_URI").unwrap(), b"/page.cgi/x?q=1&r");
        assert_eq!(get("PATH_INFO").unwrap(), b"/x");
        assert_eq!(get("REQUEST_METHOD").unwrap(), b"POST");
    }
}
