//! Validators (RFC 9110 §8.8): where a declared script's Last-Modified comes from, and its ETag.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use md5::{Digest, Md5};

use crate::declaration::{Declaration, SessionConfig};
use crate::etag::EntityTag;
use crate::path_template::expand_dependency;
use crate::regular_file;
use crate::request::{Request, cookie, cookies};
use crate::timestamp::truncate_to_second;

/// A folder dependency is walked at most this deep and this wide; beyond it, the folder's own
/// mtime still counts (it changes whenever an entry is added or removed).
const MAX_WALK_DEPTH: usize = 8;
const MAX_WALK_ENTRIES: usize = 10_000;

/// Session ids are PHP's alphabet (`[A-Za-z0-9,-]`); anything else could escape the save path.
const MAX_SESSION_ID: usize = 256;

/// The current validators of a representation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validators {
    /// The identity representation's ETag.
    pub etag: Option<EntityTag>,
    /// Last-Modified, whole seconds.
    pub last_modified: Option<SystemTime>,
}

/// Where one candidate last-modified time came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The sidecar's `last_modified`.
    Sidecar,
    /// A `depends_on` file or folder (newest mtime inside a folder).
    Dependency(PathBuf),
    /// The probe's answer.
    Probe,
    /// The script file's own mtime.
    ScriptFile,
}

/// One candidate time; `None` when the source was missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where it came from.
    pub source: Source,
    /// The time found, if any.
    pub time: Option<SystemTime>,
}

/// How a declared script's validators were derived: the trace `explain` prints.
#[derive(Debug, Clone)]
pub struct Derivation {
    /// Every source consulted.
    pub candidates: Vec<Candidate>,
    /// The newest time was later than now and was clamped to now.
    pub clamped: bool,
    /// The session cookie and file were folded into the ETag.
    pub session_covered: bool,
    /// The result.
    pub validators: Validators,
}

/// Everything a declared script's validators depend on besides the sidecar.
pub struct Inputs<'a> {
    /// The script's real path.
    pub script: &'a Path,
    /// The request (query string, session cookie).
    pub request: &'a Request,
    /// The probe's answer, when the sidecar asks for one.
    pub probe: Option<SystemTime>,
    /// The current time.
    pub now: SystemTime,
}

/// Computes Last-Modified (newest source, clamped to now) and the ETag of a declared script.
pub fn derive(sidecar: &Declaration, inputs: &Inputs<'_>) -> Derivation {
    let folder = inputs.script.parent().unwrap_or(Path::new("/"));
    let mut candidates = Vec::new();
    if let Some(time) = sidecar.last_modified {
        candidates.push(Candidate {
            source: Source::Sidecar,
            time: Some(time),
        });
    }
    let path_info = inputs.request.var("PATH_INFO").unwrap_or_default();
    for dependency in &sidecar.depends_on {
        // `{query.NAME}` / `{path_info}` filled in for this request; a value that cannot name a
        // file safely makes the dependency missing (explain shows the path as written).
        let expanded = expand_dependency(dependency, inputs.request.query(), path_info);
        let time = expanded
            .as_deref()
            .and_then(|p| newest_mtime(&folder.join(p)));
        let path = folder.join(expanded.as_deref().unwrap_or(dependency));
        candidates.push(Candidate {
            source: Source::Dependency(path),
            time,
        });
    }
    if sidecar.probe {
        candidates.push(Candidate {
            source: Source::Probe,
            time: inputs.probe,
        });
    }
    if !sidecar.feed {
        let time = mtime(inputs.script);
        candidates.push(Candidate {
            source: Source::ScriptFile,
            time,
        });
    }
    let newest = candidates.iter().filter_map(|c| c.time).max();
    let now = truncate_to_second(inputs.now);
    let clamped = newest.is_some_and(|t| truncate_to_second(t) > now);
    let last_modified = newest.map(|t| truncate_to_second(t).min(now));
    // The ETag keeps the file system's full resolution, so two changes within one second give
    // two tags; a time in the future counts as the current second (it would otherwise change
    // on every request until the clock catches up).
    let precise = if clamped { Some(now) } else { newest };

    let session = sidecar
        .session
        .as_ref()
        .and_then(|cfg| session_fingerprint(cfg, inputs.request));
    let etag = precise.map(|time| {
        let mut hash = Md5::new();
        hash.update(inputs.script.as_os_str().as_bytes());
        hash.update([0]);
        hash.update(inputs.request.var("PATH_INFO").unwrap_or_default());
        hash.update([0]);
        hash.update(inputs.request.query());
        hash.update([0]);
        hash.update(unix_nanos(time).to_string());
        if let Some(session) = &session {
            hash.update([0]);
            hash.update(session);
        }
        EntityTag::strong(hex(&hash.finalize()))
    });
    Derivation {
        candidates,
        clamped,
        session_covered: session.is_some(),
        validators: Validators {
            etag,
            last_modified,
        },
    }
}

impl Derivation {
    /// The probe's answer this derivation used, if any.
    pub fn probe_answer(&self) -> Option<SystemTime> {
        self.candidates
            .iter()
            .find(|c| c.source == Source::Probe)
            .and_then(|c| c.time)
    }
}

/// The validators a script's own output declares (for pass-through scripts).
pub fn from_script_headers(etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> Validators {
    Validators {
        etag: etag.and_then(EntityTag::parse),
        last_modified: last_modified.and_then(crate::timestamp::parse_http_date),
    }
}

/// Digest of the visitor's session: the session cookie's value and the session file's content,
/// and every other cookie named in `cookies` (a login kept beside the session). `None` when
/// the request carries none of them (a session id that is not a plain id counts as absent).
fn session_fingerprint(config: &SessionConfig, request: &Request) -> Option<[u8; 16]> {
    let header = request.header("HTTP_COOKIE")?;
    let mut hash = Md5::new();
    let mut covered = false;
    if let Some(id) = cookie(header, &config.cookie).filter(|id| is_session_id(id)) {
        covered = true;
        hash.update(id);
        hash.update([0]);
        let mut file_name = b"sess_".to_vec();
        file_name.extend_from_slice(id);
        let path = config
            .save_path
            .join(std::ffi::OsStr::from_bytes(&file_name));
        // The save path is writable by every local user: a FIFO, a device, a socket or an
        // oversized file planted there counts as no session file at all, never as a hang.
        match regular_file::read(&path, regular_file::LIMIT) {
            Ok(content) => hash.update(content),
            Err(_) => hash.update(b"(no session file)"),
        }
    }
    // Sorted, so the order a browser sends them in does not change the tag.
    let mut others: Vec<(&[u8], &[u8])> = cookies(header)
        .filter(|(name, _)| *name != config.cookie.as_bytes() && config.cookies.matches(name))
        .collect();
    others.sort_unstable();
    for (name, value) in others {
        covered = true;
        hash.update([0]);
        hash.update(name);
        hash.update(b"=");
        hash.update(value);
    }
    covered.then(|| hash.finalize().into())
}

/// PHP's session id alphabet (`[A-Za-z0-9,-]`); anything else could escape the save path.
fn is_session_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SESSION_ID
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b',' || b == b'-')
}

/// Nanoseconds since the epoch (0 before it: the clamp keeps times after 1970 in practice).
fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A file's modification time.
pub fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest mtime of a file, or of a folder and everything below it (bounded).
pub fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    let mut newest = own;
    let mut budget = MAX_WALK_ENTRIES;
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if budget == 0 {
                return newest;
            }
            budget -= 1;
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            newest = newest.max(meta.modified().ok());
            if meta.is_dir() && depth + 1 < MAX_WALK_DEPTH {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    newest
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn request(query: &str, cookie: Option<&str>) -> Request {
        let mut vars = vec![(b"QUERY_STRING".to_vec(), query.as_bytes().to_vec())];
        if let Some(c) = cookie {
            vars.push((b"HTTP_COOKIE".to_vec(), c.as_bytes().to_vec()));
        }
        Request::new(vars)
    }

    fn derive_for(sidecar: &Declaration, script: &Path, req: &Request, now: u64) -> Derivation {
        derive(
            sidecar,
            &Inputs {
                script,
                request: req,
                probe: None,
                now: at(now),
            },
        )
    }

    #[test]
    fn newest_source_wins_and_is_clamped_to_now() {
        let dir = std::env::temp_dir().join(format!("hc-val-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.cgi");
        std::fs::write(&script, "x").unwrap();
        let sidecar = Declaration {
            last_modified: Some(at(4_000_000_000)),
            ..Default::default()
        };
        let d = derive_for(&sidecar, &script, &request("", None), 3_000_000_000);
        assert!(d.clamped);
        assert_eq!(d.validators.last_modified, Some(at(3_000_000_000)));

        let feed = Declaration {
            last_modified: Some(at(1000)),
            feed: true,
            ..Default::default()
        };
        let d = derive_for(&feed, &script, &request("", None), 3_000_000_000);
        assert_eq!(
            d.validators.last_modified,
            Some(at(1000)),
            "feed ignores script mtime"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn etag_changes_with_query_time_and_path() {
        let sidecar = Declaration {
            last_modified: Some(at(1000)),
            feed: true,
            ..Default::default()
        };
        let a = Path::new("/nonexistent/a.cgi");
        let tag = |p: &Path, q: &str, s: &Declaration| {
            derive_for(s, p, &request(q, None), 5000)
                .validators
                .etag
                .unwrap()
        };
        let base = tag(a, "x=1", &sidecar);
        assert_eq!(base, tag(a, "x=1", &sidecar));
        assert_ne!(base, tag(a, "x=2", &sidecar));
        assert_ne!(base, tag(Path::new("/nonexistent/b.cgi"), "x=1", &sidecar));
        let later = Declaration {
            last_modified: Some(at(1001)),
            ..sidecar.clone()
        };
        assert_ne!(base, tag(a, "x=1", &later));
    }

    #[test]
    fn no_source_means_no_validators() {
        let sidecar = Declaration {
            feed: true,
            ..Default::default()
        };
        let d = derive_for(
            &sidecar,
            Path::new("/nonexistent"),
            &request("", None),
            5000,
        );
        assert_eq!(d.validators, Validators::default());
    }

    #[test]
    fn session_cookie_and_file_change_the_etag() {
        let dir = std::env::temp_dir().join(format!("hc-sess-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = SessionConfig {
            save_path: dir.clone(),
            ..SessionConfig::default()
        };
        let sidecar = Declaration {
            last_modified: Some(at(1000)),
            feed: true,
            session: Some(config),
            ..Default::default()
        };
        let script = Path::new("/nonexistent/s.php");
        let tag = |c: Option<&str>| derive_for(&sidecar, script, &request("", c), 5000);
        let without = tag(None);
        assert!(!without.session_covered);
        std::fs::write(dir.join("sess_abc"), "visits|i:1;").unwrap();
        let one = tag(Some("PHPSESSID=abc"));
        assert!(one.session_covered);
        assert_ne!(one.validators.etag, without.validators.etag);
        std::fs::write(dir.join("sess_abc"), "visits|i:2;").unwrap();
        assert_ne!(
            tag(Some("PHPSESSID=abc")).validators.etag,
            one.validators.etag
        );
        assert!(!tag(Some("PHPSESSID=../../etc/passwd")).session_covered);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_depends_on_placeholder_names_the_file_of_this_request() {
        let dir = std::env::temp_dir().join(format!("hc-tmpl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/42.txt"), "x").unwrap();
        let script = dir.join("page.cgi");
        let sidecar = Declaration {
            depends_on: vec![PathBuf::from("data/{query.id}.txt")],
            feed: true,
            ..Default::default()
        };
        let found = |query: &str| {
            let d = derive_for(&sidecar, &script, &request(query, None), 4_000_000_000);
            (
                d.candidates[0].source.clone(),
                d.candidates[0].time.is_some(),
            )
        };
        assert_eq!(
            found("id=42"),
            (Source::Dependency(dir.join("data/42.txt")), true)
        );
        assert_eq!(
            found("id=../page.cgi"),
            (Source::Dependency(dir.join("data/{query.id}.txt")), false),
            "a `..` segment makes the path missing"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_login_kept_in_another_cookie_changes_the_etag() {
        let config = SessionConfig {
            cookie: "DokuWiki".into(),
            save_path: PathBuf::from("/nonexistent"),
            cookies: crate::declaration::CookieGlobs::new(vec!["DW*".into()]).unwrap(),
        };
        let sidecar = Declaration {
            last_modified: Some(at(1000)),
            feed: true,
            session: Some(config),
            ..Default::default()
        };
        let script = Path::new("/nonexistent/doku.php");
        let tag = |c: &str| derive_for(&sidecar, script, &request("", Some(c)), 5000);
        let anonymous = tag("other=1");
        assert!(!anonymous.session_covered);
        let remembered = tag("other=1; DWabc=token1");
        assert!(remembered.session_covered);
        assert_ne!(remembered.validators.etag, anonymous.validators.etag);
        assert_ne!(
            tag("DWabc=token2").validators.etag,
            remembered.validators.etag
        );
        assert_eq!(
            tag("DWb=2; DWa=1").validators.etag,
            tag("DWa=1; DWb=2").validators.etag,
            "cookie order does not matter"
        );
    }

    #[test]
    fn two_changes_within_one_second_give_two_etags() {
        let dir = std::env::temp_dir().join(format!("hc-nanos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.cgi");
        std::fs::write(&script, "x").unwrap();
        let file = std::fs::File::options().write(true).open(&script).unwrap();
        let sidecar = Declaration::default();
        let mut tags = Vec::new();
        for nanos in [100_000_000, 700_000_000] {
            file.set_modified(at(2_000_000_000) + Duration::from_nanos(nanos))
                .unwrap();
            let d = derive_for(&sidecar, &script, &request("", None), 3_000_000_000);
            assert_eq!(d.validators.last_modified, Some(at(2_000_000_000)));
            tags.push(d.validators.etag.unwrap());
        }
        assert_ne!(tags[0], tags[1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_info_is_part_of_the_etag() {
        let sidecar = Declaration {
            last_modified: Some(at(1000)),
            feed: true,
            ..Default::default()
        };
        let script = Path::new("/nonexistent/cgit.cgi");
        let tag = |path_info: Option<&str>| {
            let mut vars = vec![(b"QUERY_STRING".to_vec(), Vec::new())];
            if let Some(p) = path_info {
                vars.push((b"PATH_INFO".to_vec(), p.as_bytes().to_vec()));
            }
            derive_for(&sidecar, script, &Request::new(vars), 5000)
                .validators
                .etag
        };
        assert_ne!(tag(None), tag(Some("/repo/")));
        assert_ne!(tag(Some("/repo/")), tag(Some("/repo/log/")));
    }
}
