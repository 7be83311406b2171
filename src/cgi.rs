//! CGI mode: the web server runs the wrapper once per request (RFC 3875).
//!
//! A thin adapter: the process environment becomes the `Request`, stdin the body, stdout the
//! CGI response; the engine does the rest.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use crate::apache_action::{self, ActionPage};
use crate::backend::{AbortHandle, ErrorOutput, Input};
use crate::engine::{self, DeclarationSource, Engine, Job, RequestBody};
use crate::request::{Request, percent_decode};
use crate::response::CgiWriter;
use crate::script::{Interpreter, is_wrapper};
use crate::sidecar::parse_timeout_seconds;

/// A streamed response's output is gathered in blocks of this size before reaching the server.
const STDOUT_BUFFER: usize = 64 * 1024;

/// CGI mode's command line: `[--timeout SECONDS] [INTERPRETER] [SCRIPT]`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--timeout`.
    pub timeout: Option<f64>,
    /// The positional arguments, search words already removed.
    pub positional: Vec<OsString>,
}

/// True when a web server started this process as a CGI program.
pub fn invoked_by_server() -> bool {
    std::env::var_os("GATEWAY_INTERFACE").is_some()
}

/// Removes the search words a server appends to the command line (RFC 3875 §4.4) when the
/// query has no unencoded `=`, so `GET /page.cgi?/bin/sh` can never choose what runs.
///
/// When the arguments end with the words they are dropped, unless keeping them is the only
/// reading in which the script argument is the one the server named (SCRIPT_FILENAME or
/// PATH_TRANSLATED): then the words were never appended and belong to the command line.
pub fn own_arguments(args: Vec<OsString>, request: &Request) -> Vec<OsString> {
    let raw = search_words(request.query());
    if raw.is_empty() {
        return args;
    }
    // Apache passes each word through ap_escape_shell_cmd, and mod_cgid skips empty words: the
    // words may reach us in any of these forms.
    let escaped: Vec<Vec<u8>> = raw.iter().map(|w| shell_escaped(w)).collect();
    let non_empty = |words: &[Vec<u8>]| words.iter().filter(|w| !w.is_empty()).cloned().collect();
    let forms: [Vec<Vec<u8>>; 4] = [non_empty(&escaped), escaped, non_empty(&raw), raw];
    let Some(words) = forms.iter().find(|words| ends_with(&args, words)) else {
        return args;
    };
    let split = args.len() - words.len();
    let names_served_script = |list: &[OsString]| {
        list.last().is_some_and(|last| {
            ["SCRIPT_FILENAME", "PATH_TRANSLATED"].iter().any(|var| {
                request.var(var).is_some_and(|v| {
                    same_file(Path::new(last), Path::new(std::ffi::OsStr::from_bytes(v)))
                })
            })
        })
    };
    let dropped = &args[..split];
    if names_served_script(&args) && !names_served_script(dropped) {
        return args;
    }
    dropped.to_vec()
}

fn ends_with(args: &[OsString], words: &[Vec<u8>]) -> bool {
    args.len() >= words.len()
        && args[args.len() - words.len()..]
            .iter()
            .zip(words)
            .all(|(arg, word)| arg.as_bytes() == word.as_slice())
}

/// A word as Apache's ap_escape_shell_cmd leaves it: a backslash before each shell
/// metacharacter.
fn shell_escaped(word: &[u8]) -> Vec<u8> {
    const SHELL_SPECIALS: &[u8] = b"&;`'\"|*?~<>^()[]{}$\\\n";
    let mut out = Vec::with_capacity(word.len() + 4);
    for &b in word {
        if SHELL_SPECIALS.contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The `+`-separated, URL-decoded words of a query with no unencoded `=` (RFC 3875 §4.4).
fn search_words(query: &[u8]) -> Vec<Vec<u8>> {
    if query.is_empty() || query.contains(&b'=') {
        return Vec::new();
    }
    query
        .split(|&b| b == b'+')
        .map(|word| percent_decode(word).unwrap_or_else(|| word.to_vec()))
        .collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// The script: the last positional argument; else SCRIPT_FILENAME unless it names the wrapper
/// (Apache `Action`); else PATH_TRANSLATED.
pub fn choose_script(positional: &[OsString], request: &Request) -> Option<PathBuf> {
    if let Some(last) = positional.last() {
        return Some(PathBuf::from(last));
    }
    let from_env = |name: &str| {
        request
            .var(name)
            .filter(|v| !v.is_empty())
            .map(|v| PathBuf::from(std::ffi::OsStr::from_bytes(v)))
    };
    from_env("SCRIPT_FILENAME")
        .filter(|p| !is_wrapper(p))
        .or_else(|| from_env("PATH_TRANSLATED"))
}

/// Under Apache `Action` (no script argument, SCRIPT_FILENAME names the wrapper): the page,
/// and the request as the page would have seen it run directly.
fn apache_action_page(positional: &[OsString], request: &Request) -> Option<ActionPage> {
    let names_wrapper = request
        .var("SCRIPT_FILENAME")
        .is_some_and(|v| is_wrapper(Path::new(std::ffi::OsStr::from_bytes(v))));
    if !positional.is_empty() || !names_wrapper {
        return None;
    }
    apache_action::page_view(request)
}

/// The request body on stdin, of CONTENT_LENGTH bytes (or until EOF for a chunked upload).
struct StdinBody {
    length: Option<u64>,
    until_eof: bool,
}

impl RequestBody for StdinBody {
    fn discard(&mut self) -> io::Result<()> {
        let stdin = io::stdin().lock();
        match (self.length, self.until_eof) {
            (Some(n), _) => io::copy(&mut stdin.take(n), &mut io::sink()).map(drop),
            (None, true) => io::copy(&mut stdin.take(u64::MAX), &mut io::sink()).map(drop),
            (None, false) => Ok(()),
        }
    }

    fn take_input(&mut self) -> Input {
        Input::Inherit
    }
}

/// Serves one request as a CGI program; `request` is the process environment.
pub fn run(options: Options, request: Request) -> ExitCode {
    let timeout = match options.timeout.map(parse_timeout_seconds) {
        Some(None) => return refuse_arguments("--timeout must be a positive number of seconds"),
        Some(parsed) => parsed,
        None => None,
    };
    let stdout = io::stdout().lock();
    let mut sink = CgiWriter::gathering(stdout, STDOUT_BUFFER);
    let mut body = StdinBody {
        length: request.content_length(),
        until_eof: request.var("HTTP_TRANSFER_ENCODING").is_some(),
    };
    let (script, request) = match apache_action_page(&options.positional, &request) {
        Some(page) => (Some(page.script), page.request),
        None => (choose_script(&options.positional, &request), request),
    };
    let interpreter = options.positional.len().checked_sub(1).and_then(|n| {
        let words: Vec<String> = options.positional[..n]
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        Interpreter::parse(&words.join(" "))
    });
    // The script's stderr is relayed rather than inherited, so a background child that keeps
    // it open cannot hold the server's error pipe (and the response) after the script exits;
    // each line names the script, since the server's log names only the wrapper.
    let name = script
        .as_deref()
        .and_then(|p| p.file_name())
        .unwrap_or_default();
    let relay = ErrorOutput::named(name.as_bytes());
    let job = Job {
        request: &request,
        script,
        interpreter,
        timeout,
        base_env: Vec::new(),
    };
    let abort = AbortHandle::new();
    kill_script_on_termination(&abort);
    // One request per process: the rules file it names, if any, is read for it alone.
    let engine = Engine {
        declarations: DeclarationSource::NamedByRequest,
        ..Engine::default()
    };
    let outcome = engine.handle(&job, &mut body, &relay, &abort, &mut sink);
    if outcome.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The running request's abort handle, for the signal handler.
static RUNNING: OnceLock<AbortHandle> = OnceLock::new();

/// When the server gives up on the request (client gone, its own timeout) it signals the
/// wrapper; the script runs in its own process group, so the wrapper takes it down first.
fn kill_script_on_termination(abort: &AbortHandle) {
    if RUNNING.set(abort.clone()).is_err() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: neither rustix nor std has a safe way to install a handler. The handler does
        // only async-signal-safe work (atomic loads and stores, kill). The sigaction struct is
        // zeroed (a valid value: no flags, empty mask) and then fully set up; SA_RESETHAND puts
        // the default action back before the handler runs, so its re-raise ends the wrapper.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_termination as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_termination(signal: libc::c_int) {
    if let Some(abort) = RUNNING.get() {
        abort.abort();
    }
    // The default action is back (SA_RESETHAND): the signal, pending until this handler
    // returns, ends the wrapper as it asked.
    if let Some(signal) = rustix::process::Signal::from_named_raw(signal) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
    }
}

/// Answers a command line that could not be parsed with a 500, since a web server is waiting
/// for a CGI response, not a usage message.
pub fn refuse_arguments(message: &str) -> ExitCode {
    crate::log::line(message);
    let mut sink = CgiWriter::new(io::stdout().lock());
    let _ = engine::send_text(&mut sink, 500, "http-conditional: bad command line\n");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str, script_filename: Option<&str>) -> Request {
        let mut vars = vec![(b"QUERY_STRING".to_vec(), query.as_bytes().to_vec())];
        if let Some(s) = script_filename {
            vars.push((b"SCRIPT_FILENAME".to_vec(), s.as_bytes().to_vec()));
        }
        Request::new(vars)
    }

    fn os(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn search_words_are_dropped() {
        let r = req("/bin/sh", Some("/srv/page.cgi"));
        assert_eq!(
            own_arguments(os(&["/srv/page.cgi", "/bin/sh"]), &r),
            os(&["/srv/page.cgi"])
        );
        let r = req("%2Fbin%2Fsh", None);
        assert_eq!(own_arguments(os(&["/bin/sh"]), &r), os(&[]));
        let r = req("a+b", None);
        assert_eq!(
            own_arguments(os(&["/usr/bin/php-cgi", "/x.php", "a", "b"]), &r),
            os(&["/usr/bin/php-cgi", "/x.php"])
        );
    }

    #[test]
    fn apache_shell_escaped_and_empty_words_are_dropped_too() {
        let r = req("a%3Bb+x*", Some("/srv/page.cgi"));
        assert_eq!(
            own_arguments(os(&["/srv/page.cgi", "a\\;b", "x\\*"]), &r),
            os(&["/srv/page.cgi"])
        );
        let r = req("a++b", Some("/srv/page.cgi"));
        assert_eq!(
            own_arguments(os(&["/srv/page.cgi", "a", "b"]), &r),
            os(&["/srv/page.cgi"])
        );
        assert_eq!(
            own_arguments(os(&["/srv/page.cgi", "a", "", "b"]), &r),
            os(&["/srv/page.cgi"])
        );
    }

    #[test]
    fn queries_with_equals_have_no_words() {
        let r = req("a=/bin/sh", None);
        assert_eq!(
            own_arguments(os(&["/x.cgi", "a=/bin/sh"]), &r),
            os(&["/x.cgi", "a=/bin/sh"])
        );
    }

    #[test]
    fn words_not_appended_by_the_server_are_kept() {
        // The query names the script itself and the server did not append it: dropping it
        // would leave the interpreter as the script.
        let r = req("/srv/page.cgi", Some("/srv/page.cgi"));
        assert_eq!(
            own_arguments(os(&["/bin/sh", "/srv/page.cgi"]), &r),
            os(&["/bin/sh", "/srv/page.cgi"])
        );
    }

    #[test]
    fn script_choice_order() {
        let r = req("", Some("/usr/lib/cgi-bin/http-conditional"));
        assert_eq!(choose_script(&[], &r), None);
        let mut r = req("", Some("/srv/a.cgi"));
        assert_eq!(choose_script(&[], &r), Some(PathBuf::from("/srv/a.cgi")));
        assert_eq!(
            choose_script(&os(&["/srv/b.cgi"]), &r),
            Some(PathBuf::from("/srv/b.cgi"))
        );
        r = Request::new(vec![
            (
                b"SCRIPT_FILENAME".to_vec(),
                b"/usr/lib/cgi-bin/http-conditional".to_vec(),
            ),
            (b"PATH_TRANSLATED".to_vec(), b"/srv/page.php".to_vec()),
        ]);
        assert_eq!(choose_script(&[], &r), Some(PathBuf::from("/srv/page.php")));
    }
}
