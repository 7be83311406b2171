//! A script's shebang line, as the check against running the wrapper through itself needs it:
//! the program it names when that is its only word (`#!/usr/bin/http-conditional` and no
//! interpreter after it loops).
//!
//! The long-running modes keep it per script between requests ([`ShebangCache`]), keyed by the
//! [`FileStamp`] of the stat the request already made, so a declared 304 neither opens nor
//! reads the script. Exact as the declaration cache is: an entry is used only for the very
//! stamp it was read under, and it is made only when the bytes came from the file that stamp
//! describes and that version is settled.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::file_stamp::FileStamp;

/// Bytes of the first line looked at; a longer line is cut here (the kernel's own limit on a
/// shebang line is 256 bytes on current Linux).
const FIRST_LINE_LIMIT: usize = 256;
/// Scripts kept at once; past it the cache starts over.
const CAPACITY: usize = 4096;

/// The program a shebang line names when it is the line's only word.
///
/// `first` is the start of the file; `None` when it does not start with `#!`, names nothing,
/// or names a program and arguments (an interpreter after the wrapper is how the wrapper is
/// meant to be used in a shebang).
pub fn sole_program(first: &[u8]) -> Option<PathBuf> {
    let line = first.strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let program = words.next()?;
    words.next().is_none().then(|| PathBuf::from(program))
}

/// Reads the first line of the file at `path` and gives [`sole_program`] of it, with the stamp
/// of the file it was read from (the open file's own stat). `None` when it cannot be read.
pub fn read_sole_program(path: &Path) -> Option<(Option<PathBuf>, FileStamp)> {
    let mut file = File::open(path).ok()?;
    let stamp = FileStamp::of(&file.metadata().ok()?);
    let mut first = [0u8; FIRST_LINE_LIMIT];
    let n = file.read(&mut first).ok()?;
    Some((sole_program(&first[..n]), stamp))
}

/// [`sole_program`] per script, kept while the script's stamp is unchanged.
#[derive(Debug, Default)]
pub struct ShebangCache {
    entries: Mutex<HashMap<PathBuf, (FileStamp, Option<PathBuf>)>>,
}

impl ShebangCache {
    /// The sole program of the shebang of the script at `path`, whose stat (made by this
    /// request) is `metadata`: the kept answer when it was read under the same stamp, else read
    /// now (and kept when the bytes came from that version and it is settled).
    pub fn sole_program(&self, path: &Path, metadata: &Metadata) -> Option<PathBuf> {
        self.sole_program_at(path, metadata, SystemTime::now())
    }

    /// [`ShebangCache::sole_program`], with `now` the time the stamp must be settled by.
    fn sole_program_at(
        &self,
        path: &Path,
        metadata: &Metadata,
        now: SystemTime,
    ) -> Option<PathBuf> {
        let stamp = FileStamp::of(metadata);
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((kept, program)) = entries.get(path)
            && *kept == stamp
        {
            return program.clone();
        }
        // Read without holding the lock: another request's script must not wait for this file.
        drop(entries);
        let (program, read) = read_sole_program(path)?;
        // A file changed between the request's stat and this read is the newer version: used
        // for this request (as a fresh read always was), never kept under the older stamp.
        if read == stamp && stamp.settled(now) {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if entries.len() >= CAPACITY && !entries.contains_key(path) {
                entries.clear();
            }
            entries.insert(path.to_path_buf(), (stamp, program.clone()));
        }
        program
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_stamp::SETTLE;

    #[test]
    fn a_shebang_names_its_program_only_when_it_is_the_only_word() {
        let table: [(&[u8], Option<&str>); 7] = [
            (
                b"#!/usr/bin/http-conditional\n",
                Some("/usr/bin/http-conditional"),
            ),
            (
                b"#! /usr/bin/http-conditional \r\necho",
                Some("/usr/bin/http-conditional"),
            ),
            (b"#!/usr/bin/http-conditional /usr/bin/php-cgi\n", None),
            (b"#!/bin/sh", Some("/bin/sh")),
            (b"#!\n/bin/sh\n", None),
            (b"<?php echo 1;\n", None),
            (b"", None),
        ];
        for (first, expected) in table {
            assert_eq!(
                sole_program(first),
                expected.map(PathBuf::from),
                "{}",
                String::from_utf8_lossy(first)
            );
        }
    }

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(label: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("hc-shebang-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to `path` and sets its mtime to `secs`.
    fn write_at(path: &Path, text: &str, secs: u64) {
        std::fs::write(path, text).unwrap();
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_kept_shebang_is_used_only_for_the_stamp_it_was_read_under() {
        let dir = dir("stamp");
        let script = dir.0.join("page.cgi");
        let cache = ShebangCache::default();
        let later = SystemTime::now() + 2 * SETTLE;
        let program = || {
            let meta = std::fs::metadata(&script).unwrap();
            cache.sole_program_at(&script, &meta, later)
        };
        let (aaa, bbb) = (
            Some(PathBuf::from("/usr/bin/aaa")),
            Some(PathBuf::from("/usr/bin/bbb")),
        );

        write_at(&script, "#!/usr/bin/aaa\n", 1_700_000_000);
        assert_eq!(program(), aaa);
        assert_eq!(cache.entries.lock().unwrap().len(), 1, "kept once settled");
        assert_eq!(program(), aaa, "a hit");
        // Same size, new mtime: a new stamp, which misses.
        write_at(&script, "#!/usr/bin/bbb\n", 1_700_000_001);
        assert_eq!(program(), bbb);
        // Replaced by another file renamed over it: same size and mtime, another inode.
        let other = dir.0.join("new.cgi");
        write_at(&other, "#!/usr/bin/aaa\n", 1_700_000_001);
        std::fs::rename(&other, &script).unwrap();
        assert_eq!(program(), aaa);
    }

    #[test]
    fn a_script_written_within_the_settle_window_is_read_every_time() {
        let dir = dir("unsettled");
        let script = dir.0.join("page.cgi");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let cache = ShebangCache::default();
        let meta = std::fs::metadata(&script).unwrap();
        let sh = Some(PathBuf::from("/bin/sh"));
        assert_eq!(cache.sole_program_at(&script, &meta, SystemTime::now()), sh);
        assert!(
            cache.entries.lock().unwrap().is_empty(),
            "not kept while unsettled"
        );
    }

    #[test]
    fn a_stat_older_than_the_file_read_is_not_kept() {
        let dir = dir("race");
        let script = dir.0.join("page.cgi");
        write_at(&script, "#!/bin/sh\n", 1_700_000_000);
        let stale = std::fs::metadata(&script).unwrap();
        write_at(&script, "#!/usr/bin/http-conditional\n", 1_700_000_000);
        let cache = ShebangCache::default();
        let later = SystemTime::now() + 2 * SETTLE;
        assert_eq!(
            cache.sole_program_at(&script, &stale, later),
            Some(PathBuf::from("/usr/bin/http-conditional")),
            "the file as it is now"
        );
        assert!(
            cache.entries.lock().unwrap().is_empty(),
            "not kept under the old stamp"
        );
    }
}
