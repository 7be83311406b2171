//! A script's stderr turned into log lines: one line per line the script wrote, long lines split,
//! control characters and bytes that are not UTF-8 escaped, so nothing a script prints (or a
//! script's name) can forge a line of the server's error log.
//!
//! Linear in the bytes received: each chunk is scanned once for line ends, and a line is never
//! held longer than [`MAX_LINE`] bytes, so an endless line costs as much as many short ones.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::backend::ErrorOutput;
use crate::log;

/// Longest piece of a line written as one log line; the rest follows on lines marked
/// [`CONTINUED`]. Short enough for nginx's and Apache's error-log line limits.
pub const MAX_LINE: usize = 8 * 1024;

/// Marks a log line that carries on the line before it.
pub const CONTINUED: &str = "[continued] ";

/// Where finished log lines go (each is complete, `\n` included).
pub type LineSink = Box<dyn FnMut(&[u8]) + Send>;

impl ErrorOutput {
    /// The script's stderr on the wrapper's own stderr, each line prefixed with `name` (so the
    /// server's error log says which script spoke).
    pub fn prefixed(name: &str) -> ErrorOutput {
        ErrorOutput::named(name.as_bytes())
    }

    /// [`ErrorOutput::prefixed`] for a name that may not be UTF-8 (a file name's raw bytes).
    /// Under `--log-format json` each line is a JSON object with the name and the line apart,
    /// both escaped as the text line would be (so both formats show a line the same way).
    pub fn named(name: &[u8]) -> ErrorOutput {
        match log::format() {
            log::Format::Text => StderrRelay::new(Some(name), Box::new(write_to_stderr)).output(),
            log::Format::Json => {
                let mut escaped = Vec::new();
                escape_into(&mut escaped, name);
                let script = String::from_utf8_lossy(&escaped).into_owned();
                let sink = move |line: &[u8]| {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    log::script_stderr(&script, &String::from_utf8_lossy(line));
                };
                StderrRelay::new(None, Box::new(sink)).output()
            }
        }
    }
}

fn write_to_stderr(line: &[u8]) {
    let _ = io::stderr().lock().write_all(line);
}

/// Collects a script's stderr and hands it on as escaped, bounded log lines; a last line with
/// no `\n` is handed on by [`StderrRelay::finish`], or when the relay is dropped.
pub struct StderrRelay {
    state: Mutex<State>,
}

struct State {
    /// `NAME: ` escaped, or nothing.
    prefix: Vec<u8>,
    /// The raw bytes of the line being collected (at most [`MAX_LINE`]).
    partial: Vec<u8>,
    /// The line being collected carries on one already written.
    continued: bool,
    /// The log line being built, kept to reuse its allocation.
    line: Vec<u8>,
    sink: LineSink,
}

impl StderrRelay {
    /// A relay whose lines start with `name: ` (when given) and go to `sink`.
    pub fn new(name: Option<&[u8]>, sink: LineSink) -> Arc<Self> {
        let mut prefix = Vec::new();
        if let Some(name) = name {
            escape_into(&mut prefix, name);
            prefix.extend_from_slice(b": ");
        }
        Arc::new(StderrRelay {
            state: Mutex::new(State {
                prefix,
                partial: Vec::with_capacity(MAX_LINE),
                continued: false,
                line: Vec::new(),
                sink,
            }),
        })
    }

    /// What the runner writes the script's stderr to: each chunk goes into this relay.
    pub fn output(self: &Arc<Self>) -> ErrorOutput {
        let relay = Arc::clone(self);
        ErrorOutput::Capture(Arc::new(move |chunk: &[u8]| relay.write(chunk)))
    }

    /// Takes a chunk of stderr output.
    pub fn write(&self, chunk: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.push(chunk);
    }

    /// Hands on a last line that had no `\n`.
    pub fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.finish();
    }
}

impl Drop for StderrRelay {
    fn drop(&mut self) {
        self.state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .finish();
    }
}

impl State {
    fn push(&mut self, mut chunk: &[u8]) {
        while let Some(&first) = chunk.first() {
            // A full line is split only once more of it arrives: a line of exactly the limit
            // is then written whole.
            if self.partial.len() >= MAX_LINE {
                if first == b'\n' {
                    self.emit_partial(false);
                    chunk = &chunk[1..];
                    continue;
                }
                self.split_full_line();
            }
            // Only bytes not scanned before are searched for the line's end.
            let room = MAX_LINE - self.partial.len();
            let window = &chunk[..chunk.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&window[..end]);
                    self.emit_partial(false);
                    chunk = &chunk[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    chunk = &chunk[window.len()..];
                }
            }
        }
    }

    /// Writes the first piece of a line that reached [`MAX_LINE`], keeping a character cut in
    /// half for the next piece, so a split never garbles UTF-8 text.
    fn split_full_line(&mut self) {
        let cut = char_boundary_before_end(&self.partial);
        let carried = self.partial.split_off(cut);
        self.emit_partial(true);
        self.partial.extend_from_slice(&carried);
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.emit_partial(false);
        }
    }

    /// Writes the collected bytes as one log line; `more` when the line goes on.
    fn emit_partial(&mut self, more: bool) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.extend_from_slice(&self.prefix);
        if self.continued {
            line.extend_from_slice(CONTINUED.as_bytes());
        }
        escape_into(&mut line, &self.partial);
        line.push(b'\n');
        (self.sink)(&line);
        self.line = line;
        self.partial.clear();
        self.continued = more;
    }
}

/// Where to cut `bytes` so a UTF-8 character that starts in its last three bytes and does not
/// end within them is left whole for the next piece; `bytes.len()` when nothing is cut.
fn char_boundary_before_end(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: the character starts further back
        }
        let needed = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

/// Appends `bytes` as a log line may hold them: printable UTF-8 as it is; a backslash doubled
/// (so an escape in the log always comes from us); tab as `\t`; other control characters (C0,
/// DEL, C1) and bytes that are not UTF-8 as `\xNN`, one per byte.
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let mut rest = chunk.valid();
        while !rest.is_empty() {
            // Runs of printable ASCII, nearly all of any log, are copied whole.
            let plain = rest
                .bytes()
                .position(|b| !(b' '..=b'~').contains(&b) || b == b'\\')
                .unwrap_or(rest.len());
            out.extend_from_slice(&rest.as_bytes()[..plain]);
            rest = &rest[plain..];
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                break;
            };
            rest = chars.as_str();
            match c {
                '\\' => out.extend_from_slice(b"\\\\"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if c.is_control() => {
                    let mut utf8 = [0u8; 4];
                    for &b in c.encode_utf8(&mut utf8).as_bytes() {
                        push_hex(out, b);
                    }
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        for &b in chunk.invalid() {
            push_hex(out, b);
        }
    }
}

fn push_hex(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log lines a relay named `name` writes for `chunks`.
    fn relay(name: Option<&str>, chunks: &[&[u8]]) -> Vec<String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lines);
        let relay = StderrRelay::new(
            name.map(str::as_bytes),
            Box::new(move |line: &[u8]| {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8(line.to_vec()).unwrap());
            }),
        );
        for chunk in chunks {
            relay.write(chunk);
        }
        drop(relay);
        lines.lock().unwrap().clone()
    }

    fn escaped(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_line_is_written_with_the_name_in_front() {
        assert_eq!(
            relay(Some("a.cgi"), &[b"one\ntw", b"o\n", b"three"]),
            ["a.cgi: one\n", "a.cgi: two\n", "a.cgi: three\n"]
        );
        assert_eq!(relay(None, &[b"x\n\n"]), ["x\n", "\n"]);
        assert!(relay(Some("a"), &[b""]).is_empty());
    }

    #[test]
    fn control_characters_and_bytes_that_are_not_utf8_are_escaped() {
        let table: &[(&[u8], &str)] = &[
            (b"plain text", "plain text"),
            (b"caf\xc3\xa9", "café"),
            (b"a\rb", "a\\x0db"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"tab\there", "tab\\there"),
            (b"C:\\path", "C:\\\\path"),
            (b"\x7f", "\\x7f"),
            (b"\xc2\x9b", "\\xc2\\x9b"), // C1 CSI
            (b"\xff\xfe", "\\xff\\xfe"),
            (b"\xc3", "\\xc3"), // a character cut short
            (
                b"ok \\ \x01 caf\xc3\xa9 \xff end",
                "ok \\\\ \\x01 café \\xff end",
            ),
        ];
        for (raw, want) in table {
            assert_eq!(escaped(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn a_name_holding_a_newline_or_escape_cannot_forge_a_log_line() {
        let lines = relay(Some("evil\nhttp-conditional: forged\x1b[2K"), &[b"hi\n"]);
        assert_eq!(lines, ["evil\\x0ahttp-conditional: forged\\x1b[2K: hi\n"]);
    }

    #[test]
    fn a_carriage_return_in_a_line_cannot_overwrite_it() {
        assert_eq!(
            relay(Some("a"), &[b"real\rforged\r\n"]),
            ["a: real\\x0dforged\\x0d\n"]
        );
    }

    #[test]
    fn a_long_line_is_split_and_the_rest_marked_continued() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut chunk = long.clone();
        chunk.push(b'\n');
        chunk.extend_from_slice(b"next\n");
        let lines = relay(Some("a"), &[&chunk]);
        let piece = "x".repeat(MAX_LINE);
        assert_eq!(
            lines,
            [
                format!("a: {piece}\n"),
                format!("a: {CONTINUED}{piece}\n"),
                format!("a: {CONTINUED}xxxxx\n"),
                "a: next\n".to_string(),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_written_whole() {
        let full = vec![b'y'; MAX_LINE];
        let want = [format!("{}\n", "y".repeat(MAX_LINE)), "z\n".to_string()];
        assert_eq!(relay(None, &[&full, b"\nz\n"]), want);
        assert_eq!(relay(None, &[&[full.as_slice(), b"\nz"].concat()]), want);
        assert_eq!(relay(None, &[&full]), want[..1]);
    }

    #[test]
    fn a_split_never_cuts_a_character_in_half() {
        // Two-byte characters after one ASCII byte: the limit falls inside one of them.
        let mut chunk = b"a".to_vec();
        while chunk.len() < MAX_LINE + 10 {
            chunk.extend_from_slice("é".as_bytes());
        }
        let lines = relay(None, &[&chunk]);
        assert_eq!(lines.len(), 2);
        assert!(!lines.concat().contains("\\x"), "a character was cut");
        assert_eq!(lines[0].len(), MAX_LINE); // the cut character moved on, "\n" added
    }

    #[test]
    fn split_points_keep_characters_whole() {
        let table: &[(&[u8], usize)] = &[
            (b"abc", 3),
            (b"ab\xc3", 2),
            (b"a\xc3\xa9", 3),
            (b"a\xe2\x82", 1),
            (b"\xe2\x82\xac", 3),
            (b"a\xf0\x9f\x98", 1),
            (b"\x80\x80\x80\x80", 4),
            (b"", 0),
        ];
        for (bytes, want) in table {
            assert_eq!(char_boundary_before_end(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_lines() {
        let text = b"first line\nsecond \x1b line\nthird";
        let whole = relay(Some("s"), &[text]);
        for at in 0..text.len() {
            let (a, b) = text.split_at(at);
            assert_eq!(relay(Some("s"), &[a, b]), whole, "split at {at}");
        }
    }
}
