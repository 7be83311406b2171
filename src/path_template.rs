//! `depends_on` paths filled in per request: `{query.NAME}` (a query parameter) and
//! `{path_info}`, so one declaration covers every page of a wiki or a shop.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::request::percent_decode;

/// Replaces `{query.NAME}` (the percent-decoded query parameter NAME) and `{path_info}` in a
/// `depends_on` path for one request. `None` means the path is missing for this request: a
/// placeholder without a value (absent or empty), a malformed escape, or a value holding NUL or
/// a `..` segment, which could otherwise name any file. Other braces are kept as written.
pub fn expand_dependency(template: &Path, query: &[u8], path_info: &[u8]) -> Option<PathBuf> {
    const QUERY: &[u8] = b"{query.";
    const PATH_INFO: &[u8] = b"{path_info}";
    let raw = template.as_os_str().as_bytes();
    if !raw.contains(&b'{') {
        return Some(template.to_path_buf());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.iter().position(|&b| b == b'{') {
        out.extend_from_slice(&rest[..open]);
        rest = &rest[open..];
        let (value, used) = if rest.starts_with(PATH_INFO) {
            (Some(path_info.to_vec()), PATH_INFO.len())
        } else if let Some(close) = rest
            .starts_with(QUERY)
            .then(|| rest.iter().position(|&b| b == b'}'))
            .flatten()
        {
            (query_param(query, &rest[QUERY.len()..close]), close + 1)
        } else {
            out.push(b'{');
            rest = &rest[1..];
            continue;
        };
        let value = value.filter(|v| safe_value(v, out.is_empty()))?;
        out.extend_from_slice(&value);
        rest = &rest[used..];
    }
    out.extend_from_slice(rest);
    Some(PathBuf::from(OsStr::from_bytes(&out)))
}

/// A substituted value must name something below the template's folder: no `..` segment, no
/// NUL, and, `at_start` of the template, no leading `/` (a template that begins with a
/// placeholder would otherwise let the visitor name any file on the machine and read its mtime
/// from Last-Modified; after a literal prefix, `pages{path_info}`, a slash stays below it).
fn safe_value(value: &[u8], at_start: bool) -> bool {
    let unsafe_value = value.is_empty()
        || value.contains(&0)
        || (at_start && value.starts_with(b"/"))
        || value.split(|&b| b == b'/').any(|s| s == b"..");
    !unsafe_value
}

/// The first value of `name` in a query string (`application/x-www-form-urlencoded`: `+` is a
/// space), percent-decoded; `None` when absent or malformed. Pairs are separated by `&` or `;`
/// (HTML 4's recommendation, which gitweb's links and Perl's CGI.pm use).
fn query_param(query: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let form_decode = |raw: &[u8]| {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_decode(&spaced)
    };
    query.split(|&b| b == b'&' || b == b';').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &[][..]),
        };
        (form_decode(key)? == name)
            .then(|| form_decode(value))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_may_be_separated_by_semicolons_as_gitweb_links_are() {
        let page = |q: &str| expand_dependency(Path::new("/git/{query.p}/HEAD"), q.as_bytes(), b"");
        assert_eq!(
            page("p=proj.git;a=log"),
            Some(PathBuf::from("/git/proj.git/HEAD"))
        );
        assert_eq!(
            page("a=log;p=proj.git"),
            Some(PathBuf::from("/git/proj.git/HEAD"))
        );
    }

    #[test]
    fn a_value_naming_an_absolute_path_makes_the_path_missing() {
        let only = |q: &str| expand_dependency(Path::new("{query.f}"), q.as_bytes(), b"");
        assert_eq!(only("f=/etc/shadow"), None);
        assert_eq!(only("f=%2Fetc%2Fshadow"), None);
        assert_eq!(only("f=data.txt"), Some(PathBuf::from("data.txt")));
        let info = |p: &str| expand_dependency(Path::new("{path_info}"), b"", p.as_bytes());
        assert_eq!(info("/etc/shadow"), None);
    }

    /// Contract: "`{query.NAME}` (the percent-decoded query parameter) and `{path_info}` in a
    /// path are replaced per request (a value with a `..` segment or NUL makes that path
    /// missing)".
    #[test]
    fn query_and_path_info_placeholders_are_replaced_per_request() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("data/{query.id}.txt", "id=42", "", Some("data/42.txt")),
            (
                "data/{query.id}.txt",
                "x=1&id=a%20b+c",
                "",
                Some("data/a b c.txt"),
            ),
            (
                "data/{query.id}.txt",
                "id=first&id=second",
                "",
                Some("data/first.txt"),
            ),
            (
                "pages{path_info}.txt",
                "",
                "/wiki/start",
                Some("pages/wiki/start.txt"),
            ),
            ("{query.ns}/{query.id}", "ns=a&id=b", "", Some("a/b")),
            ("plain/{other}/x", "", "", Some("plain/{other}/x")),
            ("open/{query.id", "id=1", "", Some("open/{query.id")),
            ("data/{query.id}.txt", "id=../x", "", None),
            ("data/{query.id}.txt", "id=..%2Fx", "", None),
            ("data/{query.id}", "id=a/../../etc", "", None),
            ("data/{query.id}", "id=..", "", None),
            ("data/{query.id}", "id=a%00b", "", None),
            ("data/{query.id}", "id=%zz", "", None),
            ("data/{query.id}", "other=1", "", None),
            ("data/{query.id}", "id=", "", None),
            ("pages{path_info}", "", "", None),
            ("pages{path_info}", "", "/../etc/passwd", None),
            ("data/{query.id}", "id=..x", "", Some("data/..x")),
        ];
        for &(template, query, path_info, want) in cases {
            let got =
                expand_dependency(Path::new(template), query.as_bytes(), path_info.as_bytes());
            assert_eq!(
                got,
                want.map(PathBuf::from),
                "{template} ? {query} / {path_info}"
            );
        }
    }
}
