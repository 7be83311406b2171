//! Range and If-Range (RFC 9110 §14, §13.1.5) through the real parts: the binary in CGI mode,
//! `serve` driven by curl and Python's http.client, and nginx in front of the FastCGI
//! responder; the multipart format is also checked against Python's MIME parser.

mod common;
mod fastcgi_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Cgi, Response, Spawned, TempDir, require, set_mtime};
use fastcgi_support::Responder;
use fastcgi_support::http::{self, HttpResponse};
use fastcgi_support::nginx::Nginx;
use http_conditional::range::{self, ByteRange, RangeDecision};
use http_conditional::response::ResponseHead;

/// The sidecar's `last_modified` (newer than the scripts' own mtime), as an HTTP-date.
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
/// Buffered whole (below the engine's buffer limit).
const SMALL: usize = 1000;
/// Streamed (above it).
const LARGE: usize = 400 * 1024;

/// Bytes that are not text, so a part boundary or a CRLF mix-up shows.
fn content(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 7 % 251) as u8).collect()
}

/// A document root: `file.cgi` (declared, SMALL bytes), `gz.cgi` (declared with `compress`,
/// text), `big.cgi` (declared, LARGE bytes), `plain.cgi` (not declared).
fn site(label: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(label);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small.bin"), content(SMALL)).unwrap();
    std::fs::write(www.join("large.bin"), content(LARGE)).unwrap();
    let text: String = (0..200)
        .map(|i| format!("line {i} of the page\n"))
        .collect();
    std::fs::write(www.join("page.txt"), text).unwrap();
    let cat = |name: &str, file: &str, content_type: &str| {
        let script = format!(
            "#!/bin/sh\nprintf 'Content-Type: {content_type}\\r\\n\\r\\n'\n\
             exec cat \"$(dirname \"$0\")/{file}\"\n"
        );
        let path = dir.write(&format!("www/{name}"), script, true);
        set_mtime(&path, 1_000_000_000);
    };
    cat("file.cgi", "small.bin", "application/octet-stream");
    cat("big.cgi", "large.bin", "application/octet-stream");
    cat("gz.cgi", "page.txt", "text/plain");
    cat("plain.cgi", "small.bin", "application/octet-stream");
    let sidecar = r#"{"last_modified": 1700000000}"#;
    dir.sidecar("www/file.cgi", sidecar);
    dir.sidecar("www/big.cgi", sidecar);
    dir.sidecar(
        "www/gz.cgi",
        r#"{"last_modified": 1700000000, "compress": true}"#,
    );
    (dir, www)
}

fn cgi(www: &Path, script: &str) -> Cgi {
    Cgi::new(&www.join(script))
        .env("DOCUMENT_ROOT", www.as_os_str())
        .env("SCRIPT_NAME", format!("/{script}"))
}

fn etag_of(www: &Path, script: &str) -> String {
    let whole = cgi(www, script).run();
    assert_eq!(whole.status, 200, "{}", whole.stderr);
    whole
        .header("ETag")
        .expect("a declared script's ETag")
        .to_string()
}

fn assert_whole(response: &Response, length: usize) {
    assert_eq!(response.status, 200, "{}", response.stderr);
    assert_eq!(response.body.len(), length);
    assert_eq!(response.header("Content-Range"), None);
}

#[test]

fn cgi_one_range_is_206_with_content_range() {
    let (_dir, www) = site("range-one");
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=100-99999", 100, 999),
        ("bytes=0-0", 0, 0),
    ] {
        let r = cgi(&www, "file.cgi").header("RANGE", range).run();
        assert_eq!(r.status, 206, "{range}: {}", r.stderr);
        let expected = format!("bytes {first}-{last}/{SMALL}");
        assert_eq!(
            r.header("Content-Range"),
            Some(expected.as_str()),
            "{range}"
        );
        assert_eq!(r.body, content(SMALL)[first..=last], "{range}");
        let length = (last - first + 1).to_string();
        assert_eq!(r.header("Content-Length"), Some(length.as_str()));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert!(r.header("ETag").is_some() && r.header("Last-Modified").is_some());
    }
}

#[test]

fn cgi_several_ranges_are_multipart_byteranges() {
    let (_dir, www) = site("range-multi");
    let r = cgi(&www, "file.cgi")
        .header("RANGE", "bytes=500-509, 0-9")
        .run();
    assert_eq!(r.status, 206, "{}", r.stderr);
    let content_type = r.header("Content-Type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    let parts = split_multipart(&r.body, boundary);
    let all = content(SMALL);
    assert_eq!(
        parts,
        vec![
            (format!("bytes 500-509/{SMALL}"), all[500..510].to_vec()),
            (format!("bytes 0-9/{SMALL}"), all[..10].to_vec()),
        ]
    );
}

#[test]

fn cgi_unsatisfiable_or_unparseable_ranges_are_416_with_the_length() {
    let (_dir, www) = site("range-416");
    for range in ["bytes=1000-", "bytes=-0", "bytes=9-1", "bytes=--1"] {
        let r = cgi(&www, "file.cgi").header("RANGE", range).run();
        assert_eq!(r.status, 416, "{range}: {}", r.stderr);
        let expected = format!("bytes */{SMALL}");
        assert_eq!(
            r.header("Content-Range"),
            Some(expected.as_str()),
            "{range}"
        );
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
    }
}

#[test]

fn cgi_ignored_overlapping_and_non_get_ranges_get_the_whole_200() {
    let (_dir, www) = site("range-whole");
    for range in ["items=0-9", "0-9", "bytes=", "bytes=0-9,5-15"] {
        let r = cgi(&www, "file.cgi").header("RANGE", range).run();
        assert_whole(&r, SMALL);
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"), "{range}");
    }
    let seventeen: Vec<String> = (0..17).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
    let r = cgi(&www, "file.cgi")
        .header("RANGE", format!("bytes={}", seventeen.join(",")))
        .run();
    assert_whole(&r, SMALL);
    let head = cgi(&www, "file.cgi")
        .method("HEAD")
        .header("RANGE", "bytes=0-9")
        .run();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("Accept-Ranges"), Some("bytes"));
    let post = cgi(&www, "file.cgi")
        .method("POST")
        .header("RANGE", "bytes=0-9")
        .body("x=1")
        .run();
    assert_whole(&post, SMALL);
}

#[test]

fn cgi_if_range_with_the_current_etag_or_date_serves_the_range_otherwise_the_whole_200() {
    let (_dir, www) = site("range-if");
    let etag = etag_of(&www, "file.cgi");
    let ranged = |if_range: &str| {
        cgi(&www, "file.cgi")
            .header("RANGE", "bytes=0-9")
            .header("IF_RANGE", if_range)
            .run()
    };
    assert_eq!(ranged(&etag).status, 206);
    assert_eq!(ranged(LAST_MODIFIED).status, 206);
    for stale in [
        "\"stale\"".to_string(),
        format!("W/{etag}"),
        "Wed, 15 Nov 2023 22:13:20 GMT".to_string(),
        "garbage".to_string(),
    ] {
        assert_whole(&ranged(&stale), SMALL);
    }
}

#[test]

fn cgi_gzip_variant_ranges_count_in_the_coded_bytes() {
    let (_dir, www) = site("range-gzip");
    let gzip = |range: Option<&str>, if_range: Option<&str>| {
        let mut c = cgi(&www, "gz.cgi").header("ACCEPT_ENCODING", "gzip");
        if let Some(range) = range {
            c = c.header("RANGE", range);
        }
        if let Some(if_range) = if_range {
            c = c.header("IF_RANGE", if_range);
        }
        c.run()
    };
    let whole = gzip(None, None);
    assert_eq!(whole.header("Content-Encoding"), Some("gzip"));
    let variant = whole.header("ETag").unwrap().to_string();
    assert!(variant.ends_with("-gzip\""), "{variant}");
    let r = gzip(Some("bytes=10-29"), Some(&variant));
    assert_eq!(r.status, 206, "{}", r.stderr);
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    let expected = format!("bytes 10-29/{}", whole.body.len());
    assert_eq!(r.header("Content-Range"), Some(expected.as_str()));
    assert_eq!(r.body, whole.body[10..30]);
    // The identity tag names other bytes: the whole gzip 200.
    let identity = etag_of(&www, "gz.cgi");
    assert_whole(
        &gzip(Some("bytes=10-29"), Some(&identity)),
        whole.body.len(),
    );
}

#[test]

fn cgi_streamed_and_pass_through_bodies_ignore_range() {
    let (_dir, www) = site("range-stream");
    let big = cgi(&www, "big.cgi").header("RANGE", "bytes=0-9").run();
    assert_eq!(big.status, 200, "{}", big.stderr);
    assert_eq!(big.body.len(), LARGE);
    assert_eq!(big.header("Accept-Ranges"), None);
    let plain = cgi(&www, "plain.cgi").header("RANGE", "bytes=0-9").run();
    assert_whole(&plain, SMALL);
}

/// `serve` over `www`, stopped when dropped.
struct Serve {
    _process: Spawned,
    addr: SocketAddr,
}

impl Serve {
    fn start(www: &Path) -> Serve {
        let log = www.with_file_name("serve.log");
        let (process, port) = common::start_serve(www, &log, &[], "/usr/local/bin:/usr/bin:/bin");
        Serve {
            _process: process,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]

fn serve_answers_curl_range_and_curl_resumes_a_download() {
    let Some(_) = require("curl") else { return };
    let (dir, www) = site("range-curl");
    let serve = Serve::start(&www);
    let part = dir.join("part.bin");
    let part_path = part.to_str().unwrap();
    let code = curl(&[
        "--range",
        "100-199",
        "-o",
        part_path,
        "-w",
        "%{http_code}",
        &serve.url("/file.cgi"),
    ]);
    assert_eq!(code, "206");
    assert_eq!(std::fs::read(&part).unwrap(), content(SMALL)[100..200]);
    // A download cut short after 300 bytes, resumed with `curl -C -` (Range: bytes=300-).
    std::fs::write(&part, &content(SMALL)[..300]).unwrap();
    let code = curl(&[
        "-C",
        "-",
        "-o",
        part_path,
        "-w",
        "%{http_code}",
        &serve.url("/file.cgi"),
    ]);
    assert_eq!(code, "206");
    assert_eq!(std::fs::read(&part).unwrap(), content(SMALL));
}

#[test]

fn serve_multipart_reads_with_python_http_client() {
    let Some(python) = require("python3") else {
        return;
    };
    let (_dir, www) = site("range-python");
    let serve = Serve::start(&www);
    let script = format!(
        "{PYTHON_MULTIPART}\n\
         import http.client\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=20)\n\
         c.request('GET', '/file.cgi', headers={{'Range': 'bytes=0-9,20-29,-3'}})\n\
         r = c.getresponse()\n\
         show(r.status, r.getheader('Content-Type'), r.read())\n",
        port = serve.addr.port()
    );
    let parts = run_python(&python, &script);
    let all = content(SMALL);
    assert_eq!(
        parts,
        format!(
            "206\nbytes 0-9/{SMALL} {}\nbytes 20-29/{SMALL} {}\nbytes 997-999/{SMALL} {}\n",
            hex(&all[..10]),
            hex(&all[20..30]),
            hex(&all[997..])
        )
    );
}

#[test]

fn nginx_passes_the_responders_ranges_through() {
    let (dir, www) = site("range-nginx");
    let socket = dir.join("hc.sock");
    let _responder = Responder::start(&www, &socket, &[]);
    let Some(nginx) = Nginx::start(&dir, &www, &socket) else {
        return;
    };
    let r: HttpResponse = http::get(nginx.addr, "/file.cgi", &[("Range", "bytes=5-14")]);
    assert_eq!(r.status, 206, "{}", nginx.error_log());
    let expected = format!("bytes 5-14/{SMALL}");
    assert_eq!(r.header("Content-Range"), Some(expected.as_str()));
    assert_eq!(r.body, content(SMALL)[5..15]);
    let r = http::get(nginx.addr, "/file.cgi", &[("Range", "bytes=5000-")]);
    assert_eq!(r.status, 416);
    let r = http::get(nginx.addr, "/file.cgi", &[]);
    assert_eq!((r.status, r.header("Accept-Ranges")), (200, Some("bytes")));
}

/// Python's own MIME parser (the one http.client's users reach for) over a response body:
/// prints the status, then each part's Content-Range and its bytes in hex.
const PYTHON_MULTIPART: &str = "\
import email.parser, email.policy, sys
def show(status, content_type, body):
    print(status)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b'Content-Type: ' + content_type.encode() + b'\\r\\n\\r\\n' + body)
    assert message.is_multipart(), content_type
    for part in message.iter_parts():
        print(part['Content-Range'], part.get_payload(decode=True).hex())
";

fn run_python(python: &Path, script: &str) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The parts of a multipart/byteranges body: (Content-Range, bytes).
fn split_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let find = |from: usize, needle: &[u8]| {
        body[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut at = find(0, delimiter.as_bytes()).expect("a first delimiter");
    loop {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            return parts;
        }
        let data = find(after, b"\r\n\r\n").expect("part headers") + 4;
        let end = find(data, format!("\r\n{delimiter}").as_bytes()).expect("next delimiter");
        let headers = String::from_utf8_lossy(&body[after..data]).into_owned();
        let range = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("Content-Range in every part");
        parts.push((range.to_string(), body[data..end].to_vec()));
        at = end + 2;
    }
}

/// The multipart body as the library builds it reads back with Python's MIME parser, binary
/// bytes (CR, LF, the boundary's own characters) and all. Needs no engine.
#[test]
fn multipart_byteranges_parse_with_pythons_mime_parser() {
    let Some(python) = require("python3") else {
        return;
    };
    let mut body = content(SMALL);
    // CRLFs and dashes right where a sloppy writer or reader would trip.
    body[9] = b'\r';
    body[10] = b'\n';
    body[20..22].copy_from_slice(b"--");
    let ranges = vec![
        ByteRange { first: 0, last: 10 },
        ByteRange {
            first: 20,
            last: 29,
        },
        ByteRange {
            first: 997,
            last: 999,
        },
    ];
    let mut head = ResponseHead::new(200);
    head.push("Content-Type", "application/octet-stream");
    let out = range::render(
        &RangeDecision::Multiple(ranges.clone()),
        &mut head,
        body.clone(),
    );
    let content_type = String::from_utf8(head.get("Content-Type").unwrap().to_vec()).unwrap();
    let script =
        format!("{PYTHON_MULTIPART}\nshow(206, {content_type:?}, sys.stdin.buffer.read())\n");
    let mut child = Command::new(python)
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = "206\n".to_string();
    for r in &ranges {
        let bytes = &body[r.first as usize..=r.last as usize];
        expected.push_str(&format!(
            "bytes {}-{}/{SMALL} {}\n",
            r.first,
            r.last,
            hex(bytes)
        ));
    }
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    assert_eq!(
        split_multipart(&out, content_type.rsplit('=').next().unwrap()).len(),
        3
    );
}
