//! One line to the wrapper's stderr (the web server's error log), never panicking when stderr is
//! closed or broken, as `eprintln!` would.

use std::io::Write;

/// Writes `http-conditional: TEXT` as one line.
pub fn line(text: &str) {
    let mut out = Vec::with_capacity(text.len() + 20);
    out.extend_from_slice(b"http-conditional: ");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&out);
}
