//! What identifies one version of a file for a cache: device, inode, size, mtime and ctime.
//! A change to the file gives a new stamp, so a cache keyed by it never serves a stale entry,
//! with one exception that [`FileStamp::settled`] closes: two writes within one tick of the
//! file system's clock can leave the same stamp.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

/// A file's mtime and ctime must be at least this old before what was read from it may be
/// cached: file system timestamps advance in ticks of the kernel's coarse clock (up to 10 ms),
/// so a second write of the same size within one tick keeps the stamp. Git calls this the
/// "racy" window; a second is far past any tick.
pub const SETTLE: Duration = Duration::from_secs(1);

/// One version of a file, as `stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    // A rename over the file or `touch -d` back to the old mtime still moves the ctime.
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of the file `meta` describes.
    pub fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file's last change is [`SETTLE`] older than `now`, so that a later change
    /// cannot keep this stamp.
    pub fn settled(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = now.saturating_sub(SETTLE);
        let at = |(seconds, nanos): (i64, i64)| {
            let (Ok(seconds), Ok(nanos)) = (u64::try_from(seconds), u32::try_from(nanos)) else {
                return Duration::MAX;
            };
            Duration::new(seconds, nanos.min(999_999_999))
        };
        at(self.mtime) <= limit && at(self.ctime) <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_gives_a_new_stamp_and_a_fresh_file_is_not_settled() {
        let dir = std::env::temp_dir().join(format!("hc-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"one").unwrap();
        let first = FileStamp::of(&std::fs::metadata(&path).unwrap());
        assert!(!first.settled(SystemTime::now()), "just written");
        assert!(first.settled(SystemTime::now() + SETTLE + SETTLE));
        std::fs::write(&path, b"three").unwrap();
        let second = FileStamp::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(first, second, "another size");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
