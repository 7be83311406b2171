//! `--metrics HOST:PORT` (fastcgi, serve): the contract's "Metrics", as a prometheus-client
//! registry served in the OpenMetrics text format on a listener of its own ([`listener`]).
//!
//! The front ends call [`Metrics::record`] where they hold a request's [`Outcome`], and hold
//! an [`InFlight`] guard while they serve it. What the backends know (requests waiting for a
//! slot or a connection, upstream connections) is read from them at each scrape
//! (a collector of its own), so the slots and the pools know nothing of metrics.
//!
//! Families (all prefixed `http_conditional_`, base units, counters ending in `_total`):
//! `responses_total{decision}`, `failures_total{kind}`, `script_runs_total{backend}`,
//! `runs_avoided_total`, `probe_runs_total`, `probe_cache_hits_total`,
//! `body_sent_bytes_total`, `not_modified_saved_bytes_total`,
//! `request_duration_seconds{decision}` (histogram), `requests_in_flight`,
//! `requests_waiting{queue}`, `upstream_connections{upstream,state}`,
//! `upstream_connections_opened_total{upstream}`, `upstream_task_exchanges_total{upstream,finished}`.

pub mod listener;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::fastcgi_client::Upstreams;
use crate::job::{Answer, Outcome};
use crate::launch::Backends;
use crate::slots::Slots;

/// Keys (script, query) whose last full body size is remembered for "bytes a 304 saved";
/// past this, an arbitrary key is forgotten for each new one, so memory stays bounded
/// whatever the queries clients make up.
pub const SAVED_BYTES_KEYS: usize = 10_000;

/// Upper bounds of the request duration buckets, in seconds: a 304 without running is well
/// under a millisecond, a page run from milliseconds to the 30 s default timeout.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

type Durations = Family<DecisionLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The registry and the families the front ends update.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    responses: Family<DecisionLabels, Counter>,
    failures: Family<KindLabels, Counter>,
    script_runs: Family<BackendLabels, Counter>,
    runs_avoided: Counter,
    probe_runs: Counter,
    probe_cache_hits: Counter,
    body_sent: Counter,
    saved: Counter,
    durations: Durations,
    in_flight: Gauge,
    /// The last full 200 body size per (script real path, query string).
    last_full_body: Mutex<HashMap<(PathBuf, String), u64>>,
}

impl Metrics {
    /// Every family registered, and the backends' state read at each scrape.
    pub fn new(backends: &Backends) -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("http_conditional"),
            responses: Family::default(),
            failures: Family::default(),
            script_runs: Family::default(),
            runs_avoided: Counter::default(),
            probe_runs: Counter::default(),
            probe_cache_hits: Counter::default(),
            body_sent: Counter::default(),
            saved: Counter::default(),
            durations: Durations::new_with_constructor(duration_histogram),
            in_flight: Gauge::default(),
            last_full_body: Mutex::new(HashMap::new()),
        };
        let r = &mut metrics.registry;
        r.register(
            "responses",
            "Responses by decision: not_modified and precondition_failed without running the \
             script, ran, passthrough_not_modified and passthrough_precondition_failed after \
             running it, failed",
            metrics.responses.clone(),
        );
        r.register(
            "failures",
            "Failed responses by kind (the failure table)",
            metrics.failures.clone(),
        );
        r.register(
            "script_runs",
            "Page runs by backend (process or fastcgi)",
            metrics.script_runs.clone(),
        );
        r.register(
            "runs_avoided",
            "Answers given without running the script (304 and 412 of declared scripts)",
            metrics.runs_avoided.clone(),
        );
        r.register(
            "probe_runs",
            "Probe runs (the script with CONDITIONAL_PROBE=1, or the probe command)",
            metrics.probe_runs.clone(),
        );
        r.register(
            "probe_cache_hits",
            "Probe answers reused from the probe_ttl cache or a concurrent request's run",
            metrics.probe_cache_hits.clone(),
        );
        r.register_with_unit(
            "body_sent",
            "Response body bytes sent",
            Unit::Bytes,
            metrics.body_sent.clone(),
        );
        r.register_with_unit(
            "not_modified_saved",
            "Body bytes 304s saved: the last full body sent for the same script and query",
            Unit::Bytes,
            metrics.saved.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from the request's head to its outcome, by decision",
            Unit::Seconds,
            metrics.durations.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests being answered now",
            metrics.in_flight.clone(),
        );
        r.register_collector(Box::new(BackendCollector {
            slots: backends.slots.clone(),
            upstreams: Arc::clone(&backends.upstreams),
        }));
        metrics
    }

    /// Counts one request's outcome, `duration` after its head arrived. `query` is its query
    /// string; with [`Outcome::script`], it keys the body size a later 304 saves.
    pub fn record(&self, outcome: &Outcome, duration: Duration, query: &str) {
        let decision = outcome.answer.label();
        self.responses
            .get_or_create(&DecisionLabels { decision })
            .inc();
        if let Answer::Failed(kind) = outcome.answer {
            self.failures
                .get_or_create(&KindLabels { kind: kind.label() })
                .inc();
        }
        if outcome.answer.avoided_a_run() {
            self.runs_avoided.inc();
        }
        let runs = &outcome.runs;
        if let Some(backend) = runs.backend
            && runs.page > 0
        {
            self.script_runs
                .get_or_create(&BackendLabels { backend })
                .inc_by(u64::from(runs.page));
        }
        self.probe_runs.inc_by(u64::from(runs.probes));
        self.probe_cache_hits.inc_by(u64::from(runs.probes_reused));
        self.body_sent.inc_by(outcome.body_bytes);
        if let Some(script) = &outcome.script {
            match outcome.status {
                200 if outcome.complete && outcome.body_bytes > 0 => {
                    self.remember_full_body(script, query, outcome.body_bytes)
                }
                304 => {
                    if let Some(size) = self.last_full_body(script, query) {
                        self.saved.inc_by(size);
                    }
                }
                _ => {}
            }
        }
        self.durations
            .get_or_create(&DecisionLabels { decision })
            .observe(duration.as_secs_f64());
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Exposition) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; a half-written exposition would still end badly
        // for the scraper, which then reports the scrape as failed.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        match format {
            Exposition::OpenMetrics => text,
            Exposition::PrometheusText => prometheus_text(&text),
        }
    }

    fn lock_sizes(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, String), u64>> {
        self.last_full_body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn remember_full_body(&self, script: &Path, query: &str, size: u64) {
        let mut sizes = self.lock_sizes();
        let key = (script.to_path_buf(), query.to_string());
        if sizes.len() >= SAVED_BYTES_KEYS
            && !sizes.contains_key(&key)
            && let Some(old) = sizes.keys().next().cloned()
        {
            sizes.remove(&old);
        }
        sizes.insert(key, size);
    }

    fn last_full_body(&self, script: &Path, query: &str) -> Option<u64> {
        self.lock_sizes()
            .get(&(script.to_path_buf(), query.to_string()))
            .copied()
    }
}

/// The two text formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`), for curl, `promtool check metrics`
    /// and older scrapers.
    PrometheusText,
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's family is named with its
/// `_total` there (OpenMetrics names the family without it), and `# UNIT` and `# EOF` do not
/// exist. Samples are written the same in both.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
        match descriptor {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(&name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{tag}{name}{total} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the slots and the upstream pools at each scrape.
#[derive(Debug)]
struct BackendCollector {
    slots: Option<Arc<Slots>>,
    upstreams: Arc<Upstreams>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamFinishedLabels {
    upstream: String,
    finished: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamStateLabels {
    upstream: String,
    state: &'static str,
}

fn gauge(value: usize) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for BackendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let upstreams = self.upstreams.connections();
        let waiting_for_connection: usize = upstreams.iter().map(|u| u.waiting).sum();
        let mut family = encoder.encode_descriptor(
            "requests_waiting",
            "Requests waiting: for a script slot (--max-children), or for an upstream connection.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let slot = self.slots.as_ref().map_or(0, |s| s.waiting());
        for (queue, value) in [
            ("slot", slot),
            ("upstream_connection", waiting_for_connection),
        ] {
            gauge(value).encode(family.encode_family(&QueueLabels { queue })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "upstream_connections",
            "Connections to FastCGI applications by state: in_use or idle (kept).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for u in &upstreams {
            for (state, value) in [("in_use", u.in_use), ("idle", u.idle)] {
                let labels = UpstreamStateLabels {
                    upstream: u.upstream.clone(),
                    state,
                };
                gauge(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "upstream_connections_opened",
            "Connections opened to FastCGI applications.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for u in &upstreams {
            let labels = UpstreamLabels {
                upstream: u.upstream.clone(),
            };
            ConstCounter::new(u.opened).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "upstream_task_exchanges",
            "Requests exchanged with FastCGI applications on the front end's own task (a \
             bodiless GET or HEAD on a kept connection), by where they finished: task, or \
             blocking (handed to a blocking thread: a response past the buffer, or a retry).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for u in &upstreams {
            for (finished, value) in [("task", u.on_task), ("blocking", u.handed_over)] {
                let labels = UpstreamFinishedLabels {
                    upstream: u.upstream.clone(),
                    finished,
                };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
