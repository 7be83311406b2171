//! Reading a small file the wrapper relies on (a sidecar, a session file, the rules file, probe
//! output) when anyone who can write to its folder may have put something else there.
//!
//! Debian's PHP session folder is writable by every local user (mode 1733), so `sess_x` may be a
//! FIFO (opening it waits for a writer, reading it waits forever) or a link to /dev/zero (stat
//! says 0 bytes, reading never ends). One function for every such read, checked on the opened
//! descriptor rather than on the path, so what is checked is what is read:
//! - opened non-blocking and without becoming a controlling terminal, so opening a FIFO or a
//!   device returns at once;
//! - anything but a regular file is refused;
//! - at most `limit + 1` bytes are read whatever stat says, and more than `limit` is refused.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// The limit the contract sets for every file the wrapper reads: they are configuration and
/// small state, not data.
pub const LIMIT: usize = 1024 * 1024;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing at that path (or a dangling link).
    #[error("not found")]
    NotFound,
    /// Something other than a regular file; the kind is named.
    #[error("not a regular file but {0}")]
    NotRegular(&'static str),
    /// More than the limit.
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    /// Opening or reading failed otherwise (permissions, I/O).
    #[error("{0}")]
    Io(io::Error),
}

/// Reads the regular file at `path` (symlinks followed), at most `limit` bytes, never blocking.
pub fn read(path: &Path, limit: usize) -> Result<Vec<u8>, ReadError> {
    read_with_metadata(path, limit).map(|(content, _)| content)
}

/// [`read`], with the metadata of the file that was read (taken on the opened descriptor, so
/// it describes these bytes and not whatever the path names a moment later).
pub fn read_with_metadata(
    path: &Path,
    limit: usize,
) -> Result<(Vec<u8>, std::fs::Metadata), ReadError> {
    let (file, meta) = open(path)?;
    // The size is only a hint for the allocation: a file may grow while it is read, and the
    // read itself is what is bounded.
    let hint = usize::try_from(meta.len()).unwrap_or(limit).min(limit);
    let mut content = Vec::with_capacity(hint + 1);
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut content)
        .map_err(ReadError::Io)?;
    if content.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok((content, meta))
}

/// Opens the regular file at `path` (symlinks followed) without ever blocking, with its
/// metadata read from the opened descriptor; anything but a regular file is refused.
pub fn open(path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Err(ReadError::NotFound),
        // open(2) gives ENXIO for a unix socket (and a device with no driver): name the kind.
        Err(rustix::io::Errno::NXIO) => {
            let kind = std::fs::metadata(path).map_or("a special file", |m| kind(&m.file_type()));
            return Err(ReadError::NotRegular(kind));
        }
        Err(e) => return Err(ReadError::Io(e.into())),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(&meta.file_type())));
    }
    Ok((file, meta))
}

/// The kind of a file that is not a regular one, for messages.
fn kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);

    impl Dir {
        fn new(label: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("hc-rf-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = Dir::new("plain");
        let path = dir.0.join("f");
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(read(&path, LIMIT).unwrap(), b"{}");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read(&path, LIMIT).unwrap(), b"");
    }

    #[test]
    fn a_file_of_exactly_the_limit_is_read_and_one_byte_more_is_too_large() {
        let dir = Dir::new("limit");
        let path = dir.0.join("f");
        std::fs::write(&path, vec![b'x'; 10]).unwrap();
        assert_eq!(read(&path, 10).unwrap().len(), 10);
        std::fs::write(&path, vec![b'x'; 11]).unwrap();
        assert!(matches!(read(&path, 10), Err(ReadError::TooLarge(10))));
    }

    #[test]
    fn a_missing_file_and_a_dangling_link_are_not_found() {
        let dir = Dir::new("missing");
        assert!(matches!(
            read(&dir.0.join("nope"), LIMIT),
            Err(ReadError::NotFound)
        ));
        std::os::unix::fs::symlink(dir.0.join("nope"), dir.0.join("dangling")).unwrap();
        assert!(matches!(
            read(&dir.0.join("dangling"), LIMIT),
            Err(ReadError::NotFound)
        ));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = Dir::new("fifo");
        let path = dir.0.join("fifo");
        mkfifo(&path);
        // A blocking open would wait here forever: no writer ever comes.
        assert!(matches!(
            read(&path, LIMIT),
            Err(ReadError::NotRegular("a FIFO"))
        ));
    }

    #[test]
    fn a_link_to_dev_zero_is_refused_whatever_stat_says() {
        let dir = Dir::new("zero");
        let path = dir.0.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(matches!(
            read(&path, LIMIT),
            Err(ReadError::NotRegular("a character device"))
        ));
    }

    #[test]
    fn a_directory_and_a_socket_are_refused() {
        let dir = Dir::new("kinds");
        assert!(matches!(
            read(&dir.0, LIMIT),
            Err(ReadError::NotRegular("a directory"))
        ));
        let socket = dir.0.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(matches!(
            read(&socket, LIMIT),
            Err(ReadError::NotRegular("a socket"))
        ));
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_io_error() {
        let dir = Dir::new("notdir");
        let file = dir.0.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            read(&file.join("below"), LIMIT),
            Err(ReadError::Io(_))
        ));
    }
}
