//! The sidecar file `SCRIPT.conditional.json` that declares where a script's validators come from.

use std::path::{Path, PathBuf};

#[cfg(test)]
use crate::declaration::Declaration;
use crate::declaration::DeclaredFields;
pub use crate::declaration::{Privacy, SessionConfig, parse_timeout_seconds};
use crate::failure::Failure;
use crate::file_stamp::FileStamp;
use crate::regular_file;

/// The sidecar's path for a script: `article.cgi` → `article.cgi.conditional.json`.
pub fn sidecar_path(script: &Path) -> PathBuf {
    let mut name = script.as_os_str().to_owned();
    name.push(".conditional.json");
    PathBuf::from(name)
}

/// Loads the sidecar next to `script`, resolved on its own (no site rules): what the tests
/// compare a rule's declaration with.
#[cfg(test)]
pub fn load(script: &Path) -> Result<Option<Declaration>, Failure> {
    Ok(load_fields(script)?.map(DeclaredFields::resolve))
}

/// Parses a sidecar's JSON into the fields it declares; unknown fields are errors.
pub fn parse(json: &[u8]) -> Result<DeclaredFields, serde_json::Error> {
    serde_json::from_slice(json)
}

/// Loads the sidecar next to `script`; `Ok(None)` when there is none (a pass-through script).
pub fn load_fields(script: &Path) -> Result<Option<DeclaredFields>, Failure> {
    Ok(load_stamped(script)?.map(|(fields, _)| fields))
}

/// [`load_fields`], with the stamp of the file the fields were read from.
pub fn load_stamped(script: &Path) -> Result<Option<(DeclaredFields, FileStamp)>, Failure> {
    let path = sidecar_path(script);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unreadable = |reason: String| Failure::BadSidecar {
        file: file_name.clone(),
        reason,
    };
    let (text, meta) = match regular_file::read_with_metadata(&path, regular_file::LIMIT) {
        Err(regular_file::ReadError::NotFound) => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
        Ok(read) => read,
    };
    parse(&text)
        .map(|fields| Some((fields, FileStamp::of(&meta))))
        .map_err(|e| unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Result<Declaration, serde_json::Error> {
        parse(json.as_bytes()).map(DeclaredFields::resolve)
    }

    #[test]
    fn empty_object_is_all_defaults() {
        let s = parsed("{}").unwrap();
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
            assert_eq!(parsed(json).unwrap().last_modified, want, "{json}");
        }
        assert!(parsed(r#"{"last_modified": "last tuesday"}"#).is_err());
    }

    #[test]
    fn session_true_means_php_defaults() {
        let s = parsed(r#"{"session": true}"#).unwrap();
        assert_eq!(s.session, Some(SessionConfig::default()));
        let s = parsed(r#"{"session": {"cookie": "SID", "save_path": "/tmp/s"}}"#).unwrap();
        let cfg = s.session.unwrap();
        assert_eq!(
            (cfg.cookie.as_str(), cfg.save_path.to_str()),
            ("SID", Some("/tmp/s"))
        );
        assert!(parsed(r#"{"session": false}"#).unwrap().session.is_none());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        assert!(parsed(r#"{"cache_second": 5}"#).is_err());
        assert!(parsed(r#"{"cache_privacy": "shared"}"#).is_err());
        assert!(parsed(r#"{"timeout": -1}"#).is_err());
        assert!(parsed(r#"{"timeout": 2.5}"#).unwrap().timeout.is_some());
    }

    #[test]
    fn sidecar_path_appends_suffix() {
        assert_eq!(
            sidecar_path(Path::new("/srv/a.cgi")),
            PathBuf::from("/srv/a.cgi.conditional.json")
        );
    }
}
