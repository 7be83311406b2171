//! The header block of a CGI response (RFC 3875 §6.2, §6.3).

use crate::failure::reason_phrase;
use crate::response::ResponseHead;

/// The longest header block accepted from a script.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The result of looking for a complete header block in the output so far.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadParse {
    /// More output is needed.
    Incomplete,
    /// A complete head and the offset where the body starts.
    Complete(ResponseHead, usize),
    /// Not a valid CGI header block.
    Malformed(String),
}

/// Looks for a complete header block at the start of `output`.
///
/// Lines end in LF or CRLF; the block ends with an empty line. `at_eof` says no more output
/// will come, which turns a missing blank line into an error.
pub fn parse(output: &[u8], at_eof: bool) -> HeadParse {
    let Some((head_len, body_start)) = find_end(output) else {
        if output.len() > MAX_HEAD_BYTES {
            return HeadParse::Malformed(format!("no end of headers in {MAX_HEAD_BYTES} bytes"));
        }
        if at_eof {
            return HeadParse::Malformed(if output.is_empty() {
                "no output".to_string()
            } else {
                "output ended before the blank line after the headers".to_string()
            });
        }
        return HeadParse::Incomplete;
    };
    if head_len > MAX_HEAD_BYTES {
        return HeadParse::Malformed(format!("header block over {MAX_HEAD_BYTES} bytes"));
    }
    match parse_lines(&output[..head_len]) {
        Ok(head) => HeadParse::Complete(head, body_start),
        Err(reason) => HeadParse::Malformed(reason),
    }
}

/// Finds the blank line: returns (length of the header lines, offset of the body).
fn find_end(output: &[u8]) -> Option<(usize, usize)> {
    let limit = output.len().min(MAX_HEAD_BYTES + 4);
    let mut line_start = 0;
    for (i, &b) in output[..limit].iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &output[line_start..i];
        if line.is_empty() || line == b"\r" {
            return Some((line_start, i + 1));
        }
        line_start = i + 1;
    }
    None
}

fn parse_lines(block: &[u8]) -> Result<ResponseHead, String> {
    let mut status = None;
    let mut headers = Vec::new();
    for raw_line in block.split(|&b| b == b'\n') {
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("header line without a colon: {}", show(line)))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_char(b)) {
            return Err(format!("invalid header name: {}", show(name)));
        }
        let value = line[colon + 1..].trim_ascii();
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(format!("invalid header value for {}", show(name)));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if name.eq_ignore_ascii_case("Status") {
            status = Some(parse_status(value)?);
        } else {
            headers.push((name, value.to_vec()));
        }
    }
    let location = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Location"))
        .map(|(_, v)| v.as_slice());
    let local_redirect = status.is_none() && location.is_some_and(|v| v.starts_with(b"/"));
    let (status, reason) = match status {
        Some(parsed) => parsed,
        None => {
            // RFC 3875 §6.2.3: a client redirect is a 302; a local one is the server's to do.
            let code = if location.is_some() && !local_redirect {
                302
            } else {
                200
            };
            (code, reason_phrase(code).to_string())
        }
    };
    Ok(ResponseHead {
        status,
        reason,
        headers,
        local_redirect,
    })
}

/// `Status: 404 Not Found` (RFC 3875 §6.3.3).
fn parse_status(value: &[u8]) -> Result<(u16, String), String> {
    let text = std::str::from_utf8(value).map_err(|_| "Status line is not text".to_string())?;
    let (code, reason) = text.split_once(' ').unwrap_or((text, ""));
    let code: u16 = code
        .parse()
        .ok()
        // 1xx are the server's own interim answers, never a script's final one.
        .filter(|c| (200..=599).contains(c) && code.len() == 3)
        .ok_or_else(|| format!("invalid Status: {text}"))?;
    let reason = match reason.trim() {
        "" => reason_phrase(code).to_string(),
        given => given.to_string(),
    };
    Ok((code, reason))
}

/// RFC 9110 §5.6.2 tchar.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(output: &[u8]) -> (ResponseHead, usize) {
        match parse(output, true) {
            HeadParse::Complete(h, at) => (h, at),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lf_and_crlf_blocks_parse() {
        let (h, at) = complete(b"Content-Type: text/plain\n\nbody");
        assert_eq!((h.status, at), (200, 26));
        let (h, at) = complete(b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody");
        assert_eq!(h.get("x-a"), Some(&b"1"[..]));
        assert_eq!(
            &b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody"[at..],
            b"body"
        );
    }

    #[test]
    fn status_line_is_taken_and_removed() {
        let (h, _) = complete(b"Status: 404 Gone Away\nContent-Type: text/plain\n\n");
        assert_eq!((h.status, h.reason.as_str()), (404, "Gone Away"));
        assert!(h.get("Status").is_none());
        let (h, _) = complete(b"Status: 201\n\n");
        assert_eq!(h.reason, "Created");
    }

    #[test]
    fn location_without_status_is_a_client_redirect() {
        let (h, _) = complete(b"Location: http://example.com/\n\n");
        assert_eq!(h.status, 302);
        let (h, _) = complete(b"Location: /local\n\n");
        assert_eq!(h.status, 200);
    }

    #[test]
    fn repeated_headers_keep_order() {
        let (h, _) = complete(b"Set-Cookie: a=1\nX: y\nSet-Cookie: b=2\n\n");
        let cookies: Vec<_> = h
            .headers
            .iter()
            .filter(|(n, _)| n == "Set-Cookie")
            .collect();
        assert_eq!(cookies.len(), 2);
        assert_eq!(cookies[1].1, b"b=2");
    }

    #[test]
    fn malformed_heads() {
        for output in [
            &b""[..],
            b"no colon here\n\n",
            b"Bad Name: x\n\n",
            b"Status: abc\n\n",
            b"Status: 99 Low\n\n",
            b"Content-Type: text/plain\n",
            b"<html>hello</html>",
        ] {
            assert!(
                matches!(parse(output, true), HeadParse::Malformed(_)),
                "{output:?}"
            );
        }
        assert_eq!(
            parse(b"Content-Type: text/plain\n", false),
            HeadParse::Incomplete
        );
        let endless = vec![b'a'; MAX_HEAD_BYTES + 10];
        assert!(matches!(parse(&endless, false), HeadParse::Malformed(_)));
    }
}
