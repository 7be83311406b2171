//! Digests of file contents for `"etag": "content"` (contract "Scale-out"), and the cache the
//! long-running modes keep of them.
//!
//! The cache is keyed by what `stat` says (the [`FileStamp`]: device, inode, size, mtime,
//! ctime): a 304 then costs a few
//! stat calls rather than a read of every byte. The key is this machine's business only; the
//! digest, which goes into the ETag, depends on the bytes alone.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use md5::{Digest, Md5};

use crate::file_stamp::FileStamp;
use crate::regular_file;

/// Files whose digests are kept at once; past it the cache starts over (a site's scripts and
/// their dependencies are far fewer, and a folder of many files is bounded by the walk).
pub const CAPACITY: usize = 16_384;
/// Bytes read at a time while hashing.
const CHUNK: usize = 64 * 1024;

/// A file's content digest (MD5: an ETag needs agreement, not collision resistance against
/// whoever may already write to the docroot).
pub type FileDigest = [u8; 16];

/// Digests by the file's stamp (device, inode, size, mtime, ctime), bounded by [`CAPACITY`]; shared by the threads of
/// one long-running front end.
#[derive(Debug, Default)]
pub struct DigestCache {
    digests: Mutex<HashMap<FileStamp, FileDigest>>,
}

impl DigestCache {
    /// The number of digests kept.
    pub fn len(&self) -> usize {
        self.digests.lock().map_or(0, |d| d.len())
    }

    /// Whether no digest is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, key: &FileStamp) -> Option<FileDigest> {
        self.digests.lock().ok()?.get(key).copied()
    }

    fn put(&self, key: FileStamp, digest: FileDigest) {
        // A poisoned lock only means another thread panicked mid-insert: skip caching.
        let Ok(mut digests) = self.digests.lock() else {
            return;
        };
        if digests.len() >= CAPACITY {
            digests.clear();
        }
        digests.insert(key, digest);
    }
}

/// The digest of the regular file at `path` (symlinks followed), through `cache` when given.
/// `None` when it is missing, unreadable or not a regular file (a FIFO or a device is never
/// read: opening does not block and only regular files are hashed).
pub fn file_digest(path: &Path, cache: Option<&DigestCache>) -> Option<FileDigest> {
    match cache {
        Some(_) => file_digest_as_stated(path, &std::fs::metadata(path).ok()?, cache),
        None => hash_file(path, None),
    }
}

/// [`file_digest`] for a file whose metadata the caller already has (the validators stat every
/// source for its mtime anyway): a cache hit then costs no system call at all.
pub fn file_digest_as_stated(
    path: &Path,
    meta: &Metadata,
    cache: Option<&DigestCache>,
) -> Option<FileDigest> {
    match cache.and_then(|c| c.get(&FileStamp::of(meta))) {
        Some(digest) => Some(digest),
        None => hash_file(path, cache),
    }
}

/// Reads and hashes the file, keeping the digest in `cache` when given.
fn hash_file(path: &Path, cache: Option<&DigestCache>) -> Option<FileDigest> {
    let (mut file, before) = regular_file::open(path).ok()?;
    let mut hash = Md5::new();
    let mut buffer = vec![0; CHUNK];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hash.update(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let digest: FileDigest = hash.finalize().into();
    if let Some(cache) = cache {
        // Kept only when the file did not change while it was read: a digest of half-written
        // bytes must not outlive the write that follows.
        let key = FileStamp::of(&before);
        if file
            .metadata()
            .is_ok_and(|after| FileStamp::of(&after) == key)
        {
            cache.put(key, digest);
        }
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hc-digest-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_digest_depends_on_the_bytes_not_the_mtime() {
        let dir = temp("bytes");
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, "same").unwrap();
        std::fs::write(&b, "same").unwrap();
        let file = std::fs::File::options().write(true).open(&b).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        assert_eq!(file_digest(&a, None), file_digest(&b, None));
        std::fs::write(&b, "other").unwrap();
        assert_ne!(file_digest(&a, None), file_digest(&b, None));
        assert_eq!(file_digest(&dir.join("missing"), None), None);
        assert_eq!(file_digest(&dir, None), None, "a folder is not hashed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cached_digest_is_renewed_when_the_file_changes() {
        let dir = temp("cache");
        let path = dir.join("f");
        let cache = DigestCache::default();
        std::fs::write(&path, "one").unwrap();
        let first = file_digest(&path, Some(&cache));
        assert_eq!(first, file_digest(&path, None));
        assert_eq!(cache.len(), 1);
        assert_eq!(file_digest(&path, Some(&cache)), first);
        assert_eq!(cache.len(), 1, "a second look is a hit");
        std::fs::write(&path, "two, longer").unwrap();
        let second = file_digest(&path, Some(&cache));
        assert_ne!(second, first);
        assert_eq!(second, file_digest(&path, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_is_never_read() {
        let dir = temp("fifo");
        let fifo = dir.join("pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(file_digest(&fifo, Some(&DigestCache::default())), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
