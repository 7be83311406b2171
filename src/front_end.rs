//! What the long-running front ends ([`crate::fastcgi`], [`crate::serve`]) and
//! [`crate::explain`] share: the environment scripts start from, the checks on `--root` and
//! `--timeout`, the plain-text answers given outside the engine, and log lines that cannot
//! panic.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::backend::fastcgi_client::{Address, PoolConfig, Upstreams};
use crate::declarations::Declarations;
use crate::digest_cache::DigestCache;
use crate::engine::{Backends, DeclarationSource, Engine, text_head};
use crate::probe_cache::ProbeCache;
use crate::response::ResponseHead;
use crate::shebang::ShebangCache;
use crate::sidecar::parse_timeout_seconds;
use crate::slots::Slots;

/// PATH given to scripts when the daemon itself has none (nginx passes no PATH param).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Variables every script gets unless the request carries them: the daemon's PATH (or
/// [`DEFAULT_PATH`]).
pub fn base_env() -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    vec![("PATH".to_string(), path)]
}

/// `--root` with symlinks resolved; an error unless it is a folder.
pub fn canonical_root(root: &Path) -> anyhow::Result<PathBuf> {
    let canonical =
        std::fs::canonicalize(root).with_context(|| format!("--root {}", root.display()))?;
    anyhow::ensure!(
        canonical.is_dir(),
        "--root {} is not a folder",
        canonical.display()
    );
    Ok(canonical)
}

/// `--timeout` checked once at start-up, as a sidecar's `timeout` is: an invalid value is an
/// error, never silently the default.
pub fn timeout_flag(seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    seconds
        .map(|s| {
            parse_timeout_seconds(s).ok_or_else(|| {
                anyhow::anyhow!("--timeout {s} must be a positive number of seconds")
            })
        })
        .transpose()
}

/// How the long-running modes forward to FastCGI applications (`--upstream` and its pool).
#[derive(Debug, Clone, Default)]
pub struct UpstreamOptions {
    /// `--upstream ADDR`: forward every script whose declaration names no other upstream.
    pub upstream: Option<String>,
    /// `--upstream-keep N`: idle connections kept per upstream.
    pub keep: usize,
    /// `--upstream-idle-timeout SECONDS`: how long an idle connection is kept.
    pub idle_timeout: f64,
}

/// Idle connections kept per upstream unless `--upstream-keep` says otherwise: php-fpm ties a
/// worker to each, so only a couple, enough for keep-alive under load.
pub const DEFAULT_UPSTREAM_KEEP: usize = 2;
/// Seconds an idle upstream connection is kept by default: short, so a quiet responder never
/// holds php-fpm workers that nginx or another client of the same pool could use.
pub const DEFAULT_UPSTREAM_IDLE_SECONDS: f64 = 1.0;

/// What scripts run on in a long-running mode: `max_children` processes at once, and at most
/// as many connections per upstream; an invalid `--upstream` is an error at start-up.
pub fn backends(
    max_children: usize,
    queue_timeout: Duration,
    options: &UpstreamOptions,
) -> anyhow::Result<Backends> {
    if let Some(address) = &options.upstream {
        anyhow::ensure!(
            Address::parse(address).is_some(),
            "--upstream {address:?} must be unix:/path or HOST:PORT"
        );
    }
    let idle_timeout = Duration::try_from_secs_f64(options.idle_timeout)
        .context("--upstream-idle-timeout must be a non-negative number of seconds")?;
    Ok(Backends {
        slots: Some(Slots::new(max_children, queue_timeout)),
        upstreams: Arc::new(Upstreams::new(PoolConfig {
            max_connections: max_children,
            keep_idle: options.keep,
            idle_timeout,
            queue_timeout,
        })),
        upstream: options.upstream.clone(),
    })
}

/// The declarations a long-running mode serves from: sidecars, and `--rules` loaded now (a file
/// that fails is an error at start-up, each problem with its line and column), kept per script
/// while the sidecar's stat and the rules stay the same.
pub fn declarations(rules: Option<&Path>) -> anyhow::Result<Arc<Declarations>> {
    let declarations = match rules {
        Some(path) => Declarations::with_rules(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Declarations::sidecars_only(),
    };
    Ok(Arc::new(declarations.cached()))
}

/// The engine of a long-running mode: its roots, its declarations, a probe-answer cache for
/// `probe_ttl`, a content-digest cache for `"etag": "content"`, a shebang cache (so a 304 does
/// not read the script), local redirects answered 302 (no server in front redirects
/// internally).
pub fn engine(roots: Vec<PathBuf>, declarations: &Arc<Declarations>, backends: Backends) -> Engine {
    Engine {
        roots,
        found_for_local_redirects: true,
        declarations: DeclarationSource::Loaded(Arc::clone(declarations)),
        probe_cache: Some(Arc::new(ProbeCache::default())),
        digest_cache: Some(Arc::new(DigestCache::default())),
        shebang_cache: Some(Arc::new(ShebangCache::default())),
        backends,
    }
}

/// Re-reads the rules file on every SIGHUP; a file that fails keeps the rules in use and the
/// log says why. Must run inside the runtime.
pub fn reload_rules_on_sighup(declarations: Arc<Declarations>) -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("watching SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match declarations.reload() {
                Ok(count) if declarations.rules().is_some() => {
                    log(format_args!("SIGHUP: rules re-read, {count} rule(s)"))
                }
                Ok(_) => log("SIGHUP: no --rules to re-read"),
                Err(e) => log(format_args!("SIGHUP: rules kept, the file fails:\n{e}")),
            }
        }
    });
    Ok(())
}

/// A short plain-text answer given outside the engine, with the same head as the engine's own
/// error answers ([`text_head`]).
pub fn text_answer(status: u16, text: &str) -> (ResponseHead, Vec<u8>) {
    (text_head(status, text.len()), text.as_bytes().to_vec())
}

/// Writes `http-conditional: MESSAGE` to stderr in one write through [`crate::log::line`]; a
/// closed or full stderr is ignored (a daemon must not die because its log went away).
pub fn log(message: impl Display) {
    crate::log::line(&message.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_timeout_flag_is_an_error() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e10] {
            assert!(timeout_flag(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(timeout_flag(None).unwrap(), None);
        assert_eq!(
            timeout_flag(Some(1.5)).unwrap(),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_text_answer_has_the_engine_headers() {
        let (head, body) = text_answer(404, "404 Not Found\n");
        assert_eq!(head.status, 404);
        assert_eq!(body, b"404 Not Found\n");
        assert_eq!(head.get("Content-Length"), Some(&b"14"[..]));
        assert_eq!(head.get("Cache-Control"), Some(&b"no-store"[..]));
        assert!(head.has("Content-Type"));
    }

    #[test]
    fn a_root_that_is_a_file_is_refused() {
        let file = std::env::current_exe().unwrap();
        let err = canonical_root(&file).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
        assert!(canonical_root(Path::new("/no/such/root")).is_err());
    }
}
