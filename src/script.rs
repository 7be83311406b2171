//! Which file is the script, whether it may run, and the command line that runs it.

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::failure::Failure;
use crate::shebang::{self, ShebangCache};

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
    /// Its metadata, from the one stat a request makes of it: the permission bits, the
    /// version the shebang cache is keyed by, and the mtime its validators count.
    pub metadata: Metadata,
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
        let metadata =
            std::fs::metadata(&real_path).map_err(|_| Failure::ScriptMissing(name.clone()))?;
        if !metadata.is_file() {
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
            metadata,
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
/// Refuses what would loop back into the wrapper or cannot be executed. `shebangs` keeps the
/// scripts' first lines between requests (long-running modes); `None` reads it every time.
pub fn command_line(
    script: &Script,
    interpreter: Option<&Interpreter>,
    shebangs: Option<&ShebangCache>,
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
            if script.metadata.permissions().mode() & 0o111 == 0 {
                return Err(Failure::NotExecutable(script.name.clone()));
            }
            // Whether the program the shebang names is the wrapper is asked afresh each time
            // (one stat): the script's stamp says nothing about that other file.
            let program = match shebangs {
                Some(cache) => cache.sole_program(&script.real_path, &script.metadata),
                None => {
                    shebang::read_sole_program(&script.real_path).and_then(|(program, _)| program)
                }
            };
            if program.is_some_and(|program| is_wrapper(&program)) {
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
    let (Some(ours), Ok(theirs)) = (own_identity(), std::fs::metadata(path)) else {
        return false;
    };
    ours == (theirs.dev(), theirs.ino())
}

/// The device and inode of this process's own executable. Looked up once: /proc/self/exe
/// names the file the process was started from for as long as it runs, even once that file is
/// replaced or removed (an upgrade), so a second look could only give the same answer.
fn own_identity() -> Option<(u64, u64)> {
    static OWN: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *OWN.get_or_init(|| {
        std::fs::metadata("/proc/self/exe")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    })
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
