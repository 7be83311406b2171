//! Validators (RFC 9110 §8.8): where a declared script's Last-Modified comes from, and its ETag.
//!
//! Last-Modified is always the newest time of the sources. The ETag is derived from that time
//! (`"etag": "time"`, the default) or from the bytes of the files (`"etag": "content"`), so
//! machines holding the same files with different mtimes agree (contract "Scale-out").

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use md5::{Digest, Md5};

use crate::declaration::{Declaration, EtagBasis, SessionConfig};
use crate::digest_cache::{DigestCache, FileDigest, file_digest_as_stated};
use crate::etag::EntityTag;
use crate::folder_walk;
use crate::path_template::expand_dependency;
use crate::regular_file;
use crate::request::{Request, cookie, cookies};
use crate::timestamp::truncate_to_second;

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
    /// The script's stat, when the request already made it and nothing has run since: used
    /// for its mtime instead of a second stat. `None` stats the script here (after a run,
    /// which may have changed it).
    pub script_metadata: Option<&'a Metadata>,
    /// The request (query string, session cookie).
    pub request: &'a Request,
    /// The probe's answer, when the sidecar asks for one.
    pub probe: Option<SystemTime>,
    /// The current time.
    pub now: SystemTime,
    /// Content digests kept between requests (long-running modes); `None` hashes every time
    /// (CGI mode, one request per process).
    pub digests: Option<&'a DigestCache>,
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
    // A content ETag needs the digests; one look at each file gives them with its mtime.
    let hashing = (sidecar.etag == EtagBasis::Content).then_some(inputs.digests);
    // Each dependency's digest, with the dependency as the declaration names it for this
    // request (the same on every machine, unlike where it is here).
    let mut digests = Vec::new();
    for dependency in &sidecar.depends_on {
        // `{query.NAME}` / `{path_info}` filled in for this request; a value that cannot name a
        // file safely makes the dependency missing (explain shows the path as written).
        let expanded = expand_dependency(dependency, inputs.request.query(), path_info);
        let path = folder.join(expanded.as_deref().unwrap_or(dependency));
        let found = match &expanded {
            Some(_) => inspect(&path, hashing),
            None => Found::default(),
        };
        candidates.push(Candidate {
            source: Source::Dependency(path),
            time: found.newest,
        });
        if let (Some(named), Some(digest)) = (expanded, found.digest) {
            digests.push((named, digest));
        }
    }
    if sidecar.probe {
        candidates.push(Candidate {
            source: Source::Probe,
            time: inputs.probe,
        });
    }
    let mut script_digest = None;
    if !sidecar.feed {
        let stated;
        let meta = match inputs.script_metadata {
            Some(meta) => Some(meta),
            None => {
                stated = std::fs::metadata(inputs.script).ok();
                stated.as_ref()
            }
        };
        let found = match meta {
            Some(meta) => Found::of_file(inputs.script, meta, hashing),
            None => Found::default(),
        };
        script_digest = found.digest;
        candidates.push(Candidate {
            source: Source::ScriptFile,
            time: found.newest,
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
    let etag = match sidecar.etag {
        EtagBasis::Time => precise.map(|time| {
            let mut hash = Md5::new();
            hash.update(inputs.script.as_os_str().as_bytes());
            hash.update([0]);
            hash.update(path_info);
            hash.update([0]);
            hash.update(inputs.request.query());
            hash.update([0]);
            hash.update(unix_nanos(time).to_string());
            if let Some(session) = &session {
                hash.update([0]);
                hash.update(session);
            }
            EntityTag::strong(hex(&hash.finalize()))
        }),
        EtagBasis::Content => {
            content_etag(sidecar, inputs, &digests, script_digest, session.as_ref())
        }
    };
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

/// The ETag of `"etag": "content"`: what must agree across machines, and nothing else.
///
/// It covers the script as the client addresses it (SCRIPT_NAME, PATH_INFO, the query string),
/// never its path on this machine (docroots differ between hosts and container builds); the
/// bytes of the script (unless in feed mode, where its own mtime does not count either) and of
/// each dependency (as the declaration names it; a folder by the names and digests of the
/// files in it); the times that do not come from the file system (`last_modified`, the probe's
/// answer, the same on every machine that shares the database); and the session. `None` when
/// none of these sources exists.
fn content_etag(
    sidecar: &Declaration,
    inputs: &Inputs<'_>,
    dependencies: &[(PathBuf, FileDigest)],
    script: Option<FileDigest>,
    session: Option<&[u8; 16]>,
) -> Option<EntityTag> {
    let mut hash = Md5::new();
    let mut found = false;
    hash.update(b"content\0");
    match inputs.request.var("SCRIPT_NAME") {
        Some(name) => hash.update(name),
        // Without a URL path (explain), the file name is what agrees across machines.
        None => hash.update(inputs.script.file_name().unwrap_or_default().as_bytes()),
    }
    hash.update([0]);
    hash.update(inputs.request.var("PATH_INFO").unwrap_or_default());
    hash.update([0]);
    hash.update(inputs.request.query());
    let mut times = |label: &[u8], time: Option<SystemTime>| {
        if let Some(time) = time {
            found = true;
            hash.update([0]);
            hash.update(label);
            hash.update(unix_nanos(time).to_string());
        }
    };
    times(b"last_modified=", sidecar.last_modified);
    times(b"probe=", inputs.probe);
    for (named, digest) in dependencies {
        found = true;
        hash.update([0]);
        hash.update(named.as_os_str().as_bytes());
        hash.update(b"=");
        hash.update(digest);
    }
    if let Some(digest) = script {
        found = true;
        hash.update(b"\0script=");
        hash.update(digest);
    }
    if let Some(session) = session {
        hash.update(b"\0session=");
        hash.update(session);
    }
    found.then(|| EntityTag::strong(hex(&hash.finalize())))
}

/// What one source is on this machine: its newest mtime (a folder's own or any entry's below
/// it) and, when hashing, its digest.
#[derive(Default)]
struct Found {
    newest: Option<SystemTime>,
    digest: Option<FileDigest>,
}

impl Found {
    /// A file already stat'ed; hashed (through the cache, if any) when `hashing` is `Some`.
    fn of_file(path: &Path, meta: &Metadata, hashing: Option<Option<&DigestCache>>) -> Found {
        Found {
            newest: meta.modified().ok(),
            digest: hashing.and_then(|cache| file_digest_as_stated(path, meta, cache)),
        }
    }
}

/// A file or folder dependency, in one walk: the newest mtime, and when hashing, the digest
/// (a folder's: the names, relative to it, and digests of everything below it, in the walk's
/// stable order and within its limits).
fn inspect(path: &Path, hashing: Option<Option<&DigestCache>>) -> Found {
    let Ok(meta) = std::fs::metadata(path) else {
        return Found::default();
    };
    if !meta.is_dir() {
        return Found::of_file(path, &meta, hashing);
    }
    let mut newest = meta.modified().ok();
    let mut hash = Md5::new();
    folder_walk::walk(path, |relative, meta| {
        newest = newest.max(meta.modified().ok());
        let Some(cache) = hashing else {
            return;
        };
        hash.update(relative.as_os_str().as_bytes());
        if meta.is_dir() {
            hash.update(b"/");
        } else {
            // A file that cannot be read (or a FIFO) counts by its name alone.
            hash.update(b"=");
            if let Some(digest) = file_digest_as_stated(&path.join(relative), meta, cache) {
                hash.update(digest);
            }
        }
        hash.update([0]);
    });
    Found {
        newest,
        digest: hashing.map(|_| hash.finalize().into()),
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

/// Lower-case hex of a digest. By table, not `format!` per byte: on a 304 that needs no probe
/// the ETag's sixteen `format!` calls were a sixth of the responder's instructions.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
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
                script_metadata: None,
                request: req,
                probe: None,
                now: at(now),
                digests: None,
            },
        )
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
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

    /// Two machines: the same files under different docroots, written at different times.
    fn two_machines(name: &str) -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("hc-content-{name}-{}", std::process::id()));
        let roots = (base.join("a/www"), base.join("b/www"));
        for (root, secs) in [(&roots.0, 1_700_000_000), (&roots.1, 1_800_000_000)] {
            std::fs::create_dir_all(root.join("data/sub")).unwrap();
            for (file, text) in [
                ("page.cgi", "#!/bin/sh\necho hi\n"),
                ("data/one.txt", "1"),
                ("data/sub/two.txt", "2"),
            ] {
                std::fs::write(root.join(file), text).unwrap();
                let f = std::fs::File::options()
                    .write(true)
                    .open(root.join(file))
                    .unwrap();
                f.set_modified(at(secs)).unwrap();
            }
        }
        roots
    }

    fn content_tag(root: &Path, cache: Option<&DigestCache>) -> Derivation {
        let sidecar = Declaration {
            depends_on: vec![PathBuf::from("data/")],
            etag: EtagBasis::Content,
            ..Default::default()
        };
        let vars = vec![
            (b"QUERY_STRING".to_vec(), b"a=1".to_vec()),
            (b"SCRIPT_NAME".to_vec(), b"/page.cgi".to_vec()),
        ];
        derive(
            &sidecar,
            &Inputs {
                script: &root.join("page.cgi"),
                script_metadata: None,
                request: &Request::new(vars),
                probe: None,
                now: at(4_000_000_000),
                digests: cache,
            },
        )
    }

    #[test]
    fn a_content_etag_is_the_same_on_machines_with_other_paths_and_mtimes() {
        let (a, b) = two_machines("agree");
        let (on_a, on_b) = (content_tag(&a, None), content_tag(&b, None));
        assert!(on_a.validators.etag.is_some());
        assert_eq!(on_a.validators.etag, on_b.validators.etag);
        assert_ne!(
            on_a.validators.last_modified, on_b.validators.last_modified,
            "Last-Modified stays time-based"
        );
        let cache = DigestCache::default();
        assert_eq!(
            content_tag(&a, Some(&cache)).validators.etag,
            on_a.validators.etag
        );
        assert_eq!(
            content_tag(&a, Some(&cache)).validators.etag,
            on_a.validators.etag
        );
        std::fs::remove_dir_all(a.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn a_content_etag_changes_with_the_bytes_and_not_with_touch() {
        let (a, _) = two_machines("change");
        let cache = DigestCache::default();
        let tag = || content_tag(&a, Some(&cache)).validators.etag.unwrap();
        let base = tag();
        let f = std::fs::File::options()
            .write(true)
            .open(a.join("data/sub/two.txt"))
            .unwrap();
        f.set_modified(at(1_900_000_000)).unwrap();
        assert_eq!(tag(), base, "touch alone changes nothing");
        let mut changed = Vec::new();
        std::fs::write(a.join("data/sub/two.txt"), "22").unwrap();
        changed.push(tag());
        std::fs::rename(a.join("data/one.txt"), a.join("data/uno.txt")).unwrap();
        changed.push(tag());
        std::fs::write(a.join("data/three.txt"), "").unwrap();
        changed.push(tag());
        std::fs::write(a.join("page.cgi"), "#!/bin/sh\necho ho\n").unwrap();
        changed.push(tag());
        let mut all = vec![base];
        all.extend(changed);
        let distinct: std::collections::HashSet<_> = all.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            distinct.len(),
            all.len(),
            "each change gives a new tag: {all:?}"
        );
        std::fs::remove_dir_all(a.parent().unwrap().parent().unwrap()).unwrap();
    }
}
