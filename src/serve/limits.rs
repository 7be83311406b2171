//! What one client may hold, as a web server in front of a CGI would limit it: the
//! `serve` flags, checked once at start-up, and the bound on request heads.

use std::time::Duration;

use super::upload::BodyLimits;

/// The request line and headers, in bytes; past it, 431 (RFC 6585 §5) before any script.
/// Every header becomes one environment string of the script, and Linux refuses an execve
/// (E2BIG) with any one string over MAX_ARG_STRLEN (128 KiB) or all of them over a quarter of
/// the stack limit (2 MiB by default). 64 KiB of head keeps every variable, a repeated header
/// joined into one included, under the first and the whole environment far under the second;
/// nginx (4 × 8 KiB) and Apache (100 × 8 KiB) allow less or about as much.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What one client may hold, as the web server in front of a CGI would limit it
/// (`http-conditional serve` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Connections open at once; past it new ones are closed at once (nginx
    /// `worker_connections`). Lowered at start-up, with a log line, if `ulimit -n` is too
    /// small for it.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_connections: usize,
    /// Seconds a client has to send a request head, and an idle kept-alive connection stays
    /// open (nginx `client_header_timeout`).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub header_timeout: f64,
    /// Seconds a client may send nothing in the middle of its request body before 408 (nginx
    /// `client_body_timeout`).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub body_timeout: f64,
    /// Largest request body, in bytes or with a k, m or g suffix; past it, 413 (nginx
    /// `client_max_body_size`). Bodies over 64 KiB wait in a temp file under TMPDIR.
    #[arg(long, value_name = "SIZE", default_value = "100m", value_parser = parse_size)]
    pub max_body_size: u64,
}

/// `--max-body-size`: bytes, or a number with a `k`, `m` or `g` suffix (binary multiples, as
/// nginx reads sizes).
fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, shift) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 10),
        Some(b'm') => (&lower[..lower.len() - 1], 20),
        Some(b'g') => (&lower[..lower.len() - 1], 30),
        _ => (lower.as_str(), 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with k, m or g)"))
}

/// The limits as the server enforces them, checked once at start-up.
pub(super) struct Enforced {
    /// Connections served at once (lowered to fit the descriptor limit at start-up).
    pub(super) max_connections: usize,
    /// Time to send a head, and to stay idle between requests.
    pub(super) header_timeout: Duration,
    /// What a request body is read under.
    pub(super) body: BodyLimits,
}

impl Limits {
    /// The flags as durations; an invalid value is an error, never silently the default.
    pub(super) fn check(&self) -> anyhow::Result<Enforced> {
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!("--{flag} {value} must be a positive number of seconds")
                })
        };
        anyhow::ensure!(
            self.max_connections > 0,
            "--max-connections must be at least 1"
        );
        Ok(Enforced {
            max_connections: self.max_connections,
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            body: BodyLimits {
                max_size: self.max_body_size,
                read_timeout: seconds("body-timeout", self.body_timeout)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_are_bytes_or_binary_multiples_as_nginx_reads_them() {
        for (text, expected) in [
            ("0", Some(0)),
            ("1500", Some(1500)),
            ("100k", Some(100 * 1024)),
            ("100M", Some(100 << 20)),
            ("2g", Some(2 << 30)),
            ("", None),
            ("k", None),
            ("1.5m", None),
            ("-1", None),
            ("99999999999999g", None),
        ] {
            assert_eq!(parse_size(text).ok(), expected, "{text:?}");
        }
    }
}
