//! Which file is the script, whether it may run, and the command line that runs it.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::failure::Failure;

/// The wrapper's own binary name, recognised in shebangs and SCRIPT_FILENAME.
pub const WRAPPER_NAME: &str = "http-conditional";

/// A script that exists, lies under a root (when there are any) and is a regular file.
#[derive(Debug, Clone)]
pub struct Script {
    /// The path as named (the sidecar sits next to it; the ETag covers it).
    pub path: PathBuf,
    /// Its real path, symlinks resolved.
    pub real_path: PathBuf,
    /// Its file name, for messages and logs.
    pub name: String,
    /// Its permission bits, read once with the rest of its metadata.
    pub mode: u32,
}

impl Script {
    /// Checks the named script: 404 when missing or not a regular file, 403 when its real path
    /// lies under none of `roots` (no check when `roots` is empty).
    pub fn resolve(path: &Path, roots: &[PathBuf]) -> Result<Script, Failure> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string_lossy().into_owned());
        let real_path = match std::fs::canonicalize(path) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Failure::NotExecutable(name));
            }
            Err(_) => return Err(Failure::ScriptMissing(name)),
        };
        if !roots.is_empty() && !roots.iter().any(|root| real_path.starts_with(root)) {
            return Err(Failure::OutsideRoot(name));
        }
        let meta =
            std::fs::metadata(&real_path).map_err(|_| Failure::ScriptMissing(name.clone()))?;
        if !meta.is_file() {
            return Err(Failure::ScriptMissing(name));
        }
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            real_path.clone()
        };
        Ok(Script {
            path,
            real_path,
            name,
            mode: meta.permissions().mode(),
        })
    }

    /// The folder the script runs in.
    pub fn folder(&self) -> &Path {
        self.real_path.parent().unwrap_or(Path::new("/"))
    }
}

/// An interpreter command: a program and any arguments before the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The interpreter program.
    pub program: PathBuf,
    /// Arguments given with it (a shebang line passes `php-cgi -q` as one word).
    pub args: Vec<OsString>,
}

impl Interpreter {
    /// Splits `"/usr/bin/php-cgi -q"` into program and arguments; `None` when blank.
    pub fn parse(text: &str) -> Option<Interpreter> {
        let mut words = text.split_whitespace();
        let program = PathBuf::from(words.next()?);
        Some(Interpreter {
            program,
            args: words.map(OsString::from).collect(),
        })
    }
}

/// The program and arguments that run `script`: `INTERPRETER SCRIPT`, or the script itself.
/// The real path is what runs, the one the root check approved, so a symlink swapped after the
/// check cannot redirect it.
/// Refuses what would loop back into the wrapper or cannot be executed.
pub fn command_line(
    script: &Script,
    interpreter: Option<&Interpreter>,
) -> Result<(PathBuf, Vec<OsString>), Failure> {
    match interpreter {
        Some(interp) => {
            if is_wrapper(&interp.program) {
                return Err(Failure::SelfShebang(script.name.clone()));
            }
            let mut args = interp.args.clone();
            args.push(script.real_path.clone().into_os_string());
            Ok((interp.program.clone(), args))
        }
        None => {
            if script.mode & 0o111 == 0 {
                return Err(Failure::NotExecutable(script.name.clone()));
            }
            if shebang_names_wrapper(&script.real_path) {
                return Err(Failure::SelfShebang(script.name.clone()));
            }
            Ok((script.real_path.clone(), Vec::new()))
        }
    }
}

/// True when `path` is this wrapper: the same file, or a file with the wrapper's name.
pub fn is_wrapper(path: &Path) -> bool {
    if path.file_name().is_some_and(|n| n == WRAPPER_NAME) {
        return true;
    }
    // Same inode as our own executable, whatever the names or links in between.
    let (Ok(ours), Ok(theirs)) = (std::fs::metadata("/proc/self/exe"), std::fs::metadata(path))
    else {
        return false;
    };
    ours.dev() == theirs.dev() && ours.ino() == theirs.ino()
}

/// Whether the script's first line is `#!` followed by the wrapper and nothing else.
fn shebang_names_wrapper(path: &Path) -> bool {
    let mut first = [0u8; 256];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut first)) else {
        return false;
    };
    let Some(line) = first[..n].strip_prefix(b"#!") else {
        return false;
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let names_wrapper = words.next().is_some_and(|w| is_wrapper(Path::new(w)));
    names_wrapper && words.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_words_are_split() {
        let i = Interpreter::parse("/usr/bin/php-cgi -q").unwrap();
        assert_eq!(i.program, PathBuf::from("/usr/bin/php-cgi"));
        assert_eq!(i.args, vec![OsString::from("-q")]);
        assert!(Interpreter::parse("   ").is_none());
    }

    #[test]
    fn wrapper_is_recognised_by_name() {
        assert!(is_wrapper(Path::new("/usr/local/bin/http-conditional")));
        assert!(!is_wrapper(Path::new("/bin/sh")));
    }
}
