//! Apache `Action`: the environment a page would have had had Apache run it directly.
//!
//! `Action http-conditional /http-conditional-bin/http-conditional` turns a request for
//! `/git/gitweb.cgi/project` into an internal request for
//! `/http-conditional-bin/http-conditional/git/gitweb.cgi/project`. The wrapper then sees
//! SCRIPT_NAME = the handler, PATH_INFO = the page's whole URL path, PATH_TRANSLATED = the
//! page's file with its path info appended, and every variable set on the page's folder
//! (`SetEnv`) renamed `REDIRECT_NAME`. Apps that build their links from SCRIPT_NAME (gitweb,
//! cgit) and read their settings from `SetEnv` need the view mod_cgid would have given them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::request::Request;

/// Variables Apache creates itself on an internal redirect (util_script.c, http_request.c):
/// they were never renamed, so they are not passed on under their short names.
const APACHE_OWN_REDIRECT_VARS: [&str; 5] = [
    "REDIRECT_STATUS",
    "REDIRECT_URL",
    "REDIRECT_QUERY_STRING",
    "REDIRECT_ERROR_NOTES",
    "REDIRECT_REQUEST_METHOD",
];

/// A page served through `Action`: its file and the request as the page should see it.
#[derive(Debug)]
pub struct ActionPage {
    /// The page's file (PATH_TRANSLATED with the page's own path info removed).
    pub script: PathBuf,
    /// The request with SCRIPT_NAME, PATH_INFO and PATH_TRANSLATED as mod_cgid would set them
    /// for the page, and each `REDIRECT_NAME` also passed as `NAME` when `NAME` is absent.
    pub request: Request,
}

/// The page and its request, for a request Apache's `Action` handed to the wrapper
/// (`is_action`: SCRIPT_FILENAME named the wrapper). `None` when PATH_TRANSLATED leads to no
/// file: the caller then answers as it would without this view (404).
pub fn page_view(request: &Request) -> Option<ActionPage> {
    let translated = request.var("PATH_TRANSLATED").filter(|v| !v.is_empty())?;
    let (script, page_path_info) = split_at_file(translated)?;
    let handler_path_info = request.var("PATH_INFO").unwrap_or_default();
    // PATH_INFO under Action is the page's URL path; the page's own path info is its tail.
    let (script_name, path_info) = match handler_path_info.strip_suffix(page_path_info) {
        Some(page_url) => (page_url, page_path_info),
        None => (handler_path_info, &b""[..]),
    };
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = request
        .vars()
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_slice(),
                b"SCRIPT_NAME" | b"PATH_INFO" | b"PATH_TRANSLATED"
            )
        })
        .cloned()
        .collect();
    vars.push((b"SCRIPT_NAME".to_vec(), script_name.to_vec()));
    // Apache sets PATH_INFO and PATH_TRANSLATED only when there is path info; it translates
    // PATH_INFO as a URL under the document root.
    if !path_info.is_empty() {
        vars.push((b"PATH_INFO".to_vec(), path_info.to_vec()));
        if let Some(root) = request.var("DOCUMENT_ROOT") {
            let mut translated = root.strip_suffix(b"/").unwrap_or(root).to_vec();
            translated.extend_from_slice(path_info);
            vars.push((b"PATH_TRANSLATED".to_vec(), translated));
        }
    }
    for (name, value) in renamed_back(request) {
        vars.push((name, value));
    }
    Some(ActionPage {
        script,
        request: Request::new(vars),
    })
}

/// The wrapper's own settings: read on the handler's location only, as the shipped snippets
/// document, so a `SetEnv CONDITIONAL_TIMEOUT` on a pages' folder stays renamed.
const WRAPPER_SETTINGS_PREFIX: &[u8] = b"CONDITIONAL_";

/// `REDIRECT_NAME=value` as `NAME=value`, for each name the request does not already carry.
/// Only one level: `REDIRECT_REDIRECT_X` is a variable from a redirect before Action's.
fn renamed_back(request: &Request) -> Vec<(Vec<u8>, Vec<u8>)> {
    request
        .vars()
        .iter()
        .filter(|(name, _)| {
            !APACHE_OWN_REDIRECT_VARS
                .iter()
                .any(|own| own.as_bytes() == name.as_slice())
        })
        .filter_map(|(name, value)| {
            let short = name.strip_prefix(b"REDIRECT_")?;
            let taken = short.is_empty()
                || short.starts_with(b"REDIRECT_")
                || short.starts_with(WRAPPER_SETTINGS_PREFIX)
                || request.vars().iter().any(|(n, _)| n == short);
            (!taken).then(|| (short.to_vec(), value.clone()))
        })
        .collect()
}

/// Splits `/var/www/git/gitweb.cgi/project` into the file `/var/www/git/gitweb.cgi` and the
/// path info `/project`, by walking up until a path names something that is not a folder.
/// `None` when no file is found on the way (only folders, or nothing at all).
fn split_at_file(translated: &[u8]) -> Option<(PathBuf, &[u8])> {
    let mut end = translated.len();
    loop {
        let candidate = &translated[..end];
        if candidate.is_empty() {
            return None;
        }
        let path = Path::new(OsStr::from_bytes(candidate));
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return None,
            Ok(_) => return Some((path.to_path_buf(), &translated[end..])),
            Err(_) => {}
        }
        end = candidate.iter().rposition(|&b| b == b'/')?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(vars: &[(&str, &str)]) -> Request {
        Request::new(
            vars.iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    struct Site {
        dir: PathBuf,
    }

    impl Site {
        fn new(label: &str) -> Site {
            let dir =
                std::env::temp_dir().join(format!("hc-action-{label}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("git")).unwrap();
            std::fs::write(dir.join("git/gitweb.cgi"), "#!/bin/sh\n").unwrap();
            Site { dir }
        }

        fn path(&self, rel: &str) -> String {
            self.dir.join(rel).display().to_string()
        }
    }

    impl Drop for Site {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn script_name_is_the_pages_url_path_and_path_info_only_what_follows_it() {
        let site = Site::new("split");
        let translated = site.path("git/gitweb.cgi/project.git/tree");
        let r = request(&[
            ("SCRIPT_NAME", "/http-conditional-bin/http-conditional"),
            ("PATH_INFO", "/git/gitweb.cgi/project.git/tree"),
            ("PATH_TRANSLATED", &translated),
            ("DOCUMENT_ROOT", "/srv/htdocs/"),
        ]);
        let page = page_view(&r).unwrap();
        assert_eq!(page.script, site.dir.join("git/gitweb.cgi"));
        assert_eq!(page.request.var_str("SCRIPT_NAME"), Some("/git/gitweb.cgi"));
        assert_eq!(page.request.var_str("PATH_INFO"), Some("/project.git/tree"));
        assert_eq!(
            page.request.var_str("PATH_TRANSLATED"),
            Some("/srv/htdocs/project.git/tree")
        );
    }

    #[test]
    fn without_path_info_apache_sets_neither_path_info_nor_path_translated() {
        let site = Site::new("plain");
        let translated = site.path("git/gitweb.cgi");
        let r = request(&[
            ("SCRIPT_NAME", "/http-conditional-bin/http-conditional"),
            ("PATH_INFO", "/git/gitweb.cgi"),
            ("PATH_TRANSLATED", &translated),
            ("DOCUMENT_ROOT", "/srv/htdocs"),
        ]);
        let page = page_view(&r).unwrap();
        assert_eq!(page.request.var_str("SCRIPT_NAME"), Some("/git/gitweb.cgi"));
        assert_eq!(page.request.var("PATH_INFO"), None);
        assert_eq!(page.request.var("PATH_TRANSLATED"), None);
    }

    #[test]
    fn setenv_on_the_pages_folder_reaches_the_page_under_its_own_name() {
        let site = Site::new("env");
        let translated = site.path("git/gitweb.cgi");
        let r = request(&[
            ("PATH_INFO", "/git/gitweb.cgi"),
            ("PATH_TRANSLATED", &translated),
            ("REDIRECT_GITWEB_CONFIG", "/srv/gitweb.conf"),
            ("REDIRECT_KEPT", "renamed"),
            ("KEPT", "own"),
            ("REDIRECT_STATUS", "200"),
            ("REDIRECT_URL", "/git/gitweb.cgi"),
            ("REDIRECT_REDIRECT_OLD", "x"),
            ("REDIRECT_CONDITIONAL_TIMEOUT", "1"),
        ]);
        let page = page_view(&r).unwrap();
        let vars = &page.request;
        assert_eq!(vars.var_str("GITWEB_CONFIG"), Some("/srv/gitweb.conf"));
        assert_eq!(vars.var_str("KEPT"), Some("own"), "a present NAME wins");
        assert_eq!(
            vars.var_str("REDIRECT_GITWEB_CONFIG"),
            Some("/srv/gitweb.conf")
        );
        for absent in ["STATUS", "URL", "REDIRECT_OLD", "CONDITIONAL_TIMEOUT"] {
            assert_eq!(vars.var(absent), None, "{absent}");
        }
    }

    #[test]
    fn a_path_that_leads_to_no_file_is_no_page() {
        let site = Site::new("none");
        for translated in [
            site.path("git"),
            site.path("git/missing.cgi/x"),
            String::new(),
        ] {
            let r = request(&[("PATH_INFO", "/git/x"), ("PATH_TRANSLATED", &translated)]);
            assert!(page_view(&r).is_none(), "{translated}");
        }
    }
}
