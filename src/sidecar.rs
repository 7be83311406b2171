//! The sidecar file `SCRIPT.conditional.json` that declares where a script's validators come from.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::failure::Failure;
use crate::regular_file;
use crate::timestamp::parse_flexible;

/// Cache privacy of a declared script (`"cache_privacy"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Only the visitor's own cache may store it.
    #[default]
    Private,
    /// Shared caches may store it too.
    Public,
}

/// Where the session mode finds the visitor's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The session cookie's name.
    pub cookie: String,
    /// The folder holding `sess_<id>` files.
    pub save_path: PathBuf,
    /// Other cookies that carry a login (`"cookies": ["DW*"]`, globs on the name).
    pub cookies: CookieGlobs,
}

/// Globs on cookie names (`DW*`): a login kept in a cookie beside the session's.
#[derive(Debug, Clone, Default)]
pub struct CookieGlobs {
    patterns: Vec<String>,
    set: globset::GlobSet,
}

impl CookieGlobs {
    /// Compiles the globs; an error names the one that does not parse.
    pub fn new(patterns: Vec<String>) -> Result<CookieGlobs, globset::Error> {
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in &patterns {
            builder.add(globset::Glob::new(pattern)?);
        }
        Ok(CookieGlobs {
            set: builder.build()?,
            patterns,
        })
    }

    /// Whether a cookie of this name is covered.
    pub fn matches(&self, name: &[u8]) -> bool {
        !self.patterns.is_empty()
            && std::str::from_utf8(name).is_ok_and(|name| self.set.is_match(name))
    }

    /// The globs as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl PartialEq for CookieGlobs {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for CookieGlobs {}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie: "PHPSESSID".into(),
            save_path: PathBuf::from("/var/lib/php/sessions"),
            cookies: CookieGlobs::default(),
        }
    }
}

/// A parsed sidecar; every field optional as in the contract.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Fixed last-modified time.
    #[serde(default, deserialize_with = "de_time")]
    pub last_modified: Option<std::time::SystemTime>,
    /// Files and folders whose mtimes count, relative to the script's folder.
    #[serde(default)]
    pub depends_on: Vec<PathBuf>,
    /// Ask the script for its last-modified time.
    #[serde(default)]
    pub probe: bool,
    /// <0 no-store; 0 revalidate every time; N>0 fresh for N seconds.
    #[serde(default)]
    pub cache_seconds: i64,
    /// Private or public.
    #[serde(default)]
    pub cache_privacy: Privacy,
    /// gzip/deflate when the client accepts it.
    #[serde(default)]
    pub compress: bool,
    /// RSS/Atom feed mode.
    #[serde(default)]
    pub feed: bool,
    /// Session-aware ETags.
    #[serde(default, deserialize_with = "de_session")]
    pub session: Option<SessionConfig>,
    /// Run as `INTERPRETER SCRIPT`.
    #[serde(default)]
    pub interpreter: Option<String>,
    /// Served by a running FastCGI application (`unix:/path` or `HOST:PORT`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Seconds before 504.
    #[serde(default, deserialize_with = "de_timeout")]
    pub timeout: Option<std::time::Duration>,
}

/// The sidecar's path for a script: `article.cgi` → `article.cgi.conditional.json`.
pub fn sidecar_path(script: &Path) -> PathBuf {
    let mut name = script.as_os_str().to_owned();
    name.push(".conditional.json");
    PathBuf::from(name)
}

/// Loads the sidecar next to `script`; `Ok(None)` when there is none (a pass-through script).
pub fn load(script: &Path) -> Result<Option<Sidecar>, Failure> {
    let path = sidecar_path(script);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unreadable = |reason: String| Failure::BadSidecar {
        file: file_name.clone(),
        reason,
    };
    let text = match regular_file::read(&path, regular_file::LIMIT) {
        Err(regular_file::ReadError::NotFound) => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
        Ok(text) => text,
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| unreadable(e.to_string()))
}

fn de_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::SystemTime>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(i64),
        Text(String),
    }
    let parsed = match Raw::deserialize(d)? {
        Raw::Seconds(s) => crate::timestamp::from_unix(s),
        Raw::Text(t) => parse_flexible(&t),
    };
    parsed.map(Some).ok_or_else(|| {
        serde::de::Error::custom(
            "last_modified must be unix seconds, an HTTP-date or an RFC 3339 time after 1970",
        )
    })
}

fn de_session<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SessionConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Detailed {
        cookie: Option<String>,
        save_path: Option<PathBuf>,
        #[serde(default)]
        cookies: Vec<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Detailed(Detailed),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Flag(false) => None,
        Raw::Flag(true) => Some(SessionConfig::default()),
        Raw::Detailed(detail) => {
            let default = SessionConfig::default();
            let cookies = CookieGlobs::new(detail.cookies)
                .map_err(|e| serde::de::Error::custom(format!("session.cookies: {e}")))?;
            Some(SessionConfig {
                cookie: detail.cookie.unwrap_or(default.cookie),
                save_path: detail.save_path.unwrap_or(default.save_path),
                cookies,
            })
        }
    })
}

fn de_timeout<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let seconds = f64::deserialize(d)?;
    parse_timeout_seconds(seconds)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("timeout must be a positive number of seconds"))
}

/// A timeout in seconds as given in a sidecar, flag or environment variable.
pub fn parse_timeout_seconds(seconds: f64) -> Option<std::time::Duration> {
    (seconds.is_finite() && seconds > 0.0 && seconds < 1e9)
        .then(|| std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Sidecar, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn empty_object_is_all_defaults() {
        let s = parse("{}").unwrap();
        assert_eq!(s.cache_seconds, 0);
        assert_eq!(s.cache_privacy, Privacy::Private);
        assert!(!s.probe && !s.compress && !s.feed);
        assert!(s.session.is_none() && s.last_modified.is_none());
    }

    #[test]
    fn last_modified_in_three_formats() {
        let want = crate::timestamp::from_unix(1_089_308_034);
        for json in [
            r#"{"last_modified": 1089308034}"#,
            r#"{"last_modified": "Thu, 08 Jul 2004 17:33:54 GMT"}"#,
            r#"{"last_modified": "2004-07-08T17:33:54Z"}"#,
        ] {
            assert_eq!(parse(json).unwrap().last_modified, want, "{json}");
        }
        assert!(parse(r#"{"last_modified": "last tuesday"}"#).is_err());
    }

    #[test]
    fn session_true_means_php_defaults() {
        let s = parse(r#"{"session": true}"#).unwrap();
        assert_eq!(s.session, Some(SessionConfig::default()));
        let s = parse(r#"{"session": {"cookie": "SID", "save_path": "/tmp/s"}}"#).unwrap();
        let cfg = s.session.unwrap();
        assert_eq!(
            (cfg.cookie.as_str(), cfg.save_path.to_str()),
            ("SID", Some("/tmp/s"))
        );
        assert!(parse(r#"{"session": false}"#).unwrap().session.is_none());
        let s = parse(r#"{"session": {"cookie": "DokuWiki", "cookies": ["DW*"]}}"#).unwrap();
        let globs = s.session.unwrap().cookies;
        assert!(globs.matches(b"DW3a9f") && !globs.matches(b"DokuWiki"));
        assert!(parse(r#"{"session": {"cookies": ["DW[" ]}}"#).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        assert!(parse(r#"{"cache_second": 5}"#).is_err());
        assert!(parse(r#"{"cache_privacy": "shared"}"#).is_err());
        assert!(parse(r#"{"timeout": -1}"#).is_err());
        assert!(parse(r#"{"timeout": 2.5}"#).unwrap().timeout.is_some());
    }

    #[test]
    fn sidecar_path_appends_suffix() {
        assert_eq!(
            sidecar_path(Path::new("/srv/a.cgi")),
            PathBuf::from("/srv/a.cgi.conditional.json")
        );
    }
}
