use std::time::Duration;

use super::listener::negotiate;
use super::*;
use crate::failure::FailureKind;
use crate::job::Runs;
use crate::preconditions::Rule;

fn metrics() -> Metrics {
    Metrics::new(&Backends {
        slots: Some(Slots::new(1, Duration::from_secs(1))),
        upstreams: Arc::new(Upstreams::default()),
        upstream: None,
    })
}

/// The value of the sample `name` (labels included, as written) in the Prometheus text.
fn sample(metrics: &Metrics, name: &str) -> Option<f64> {
    metrics
        .render(Exposition::PrometheusText)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn outcome(status: u16, answer: Answer, body_bytes: u64, script: &str) -> Outcome {
    Outcome {
        body_bytes,
        script: Some(PathBuf::from(script)),
        ..Outcome::bodiless(status, answer)
    }
}

fn not_modified() -> Answer {
    Answer::WithoutRunning(Rule::IfNoneMatchMatched)
}

#[test]
fn each_decision_is_counted_under_its_label() {
    let m = metrics();
    let ran = Outcome {
        runs: Runs {
            page: 1,
            probes: 2,
            probes_reused: 1,
            backend: Some("process"),
        },
        ..outcome(200, Answer::Ran, 10, "/a")
    };
    let table = [
        ran,
        outcome(304, not_modified(), 0, "/a"),
        outcome(404, Answer::Failed(FailureKind::NotFound), 14, "/b"),
        outcome(502, Answer::Failed(FailureKind::ScriptFailed), 16, "/c"),
    ];
    for o in &table {
        m.record(o, Duration::from_millis(1), "");
    }
    let expect = [
        ("http_conditional_responses_total{decision=\"ran\"}", 1.0),
        (
            "http_conditional_responses_total{decision=\"not_modified\"}",
            1.0,
        ),
        ("http_conditional_responses_total{decision=\"failed\"}", 2.0),
        ("http_conditional_failures_total{kind=\"not_found\"}", 1.0),
        (
            "http_conditional_failures_total{kind=\"script_failed\"}",
            1.0,
        ),
        (
            "http_conditional_script_runs_total{backend=\"process\"}",
            1.0,
        ),
        ("http_conditional_runs_avoided_total", 1.0),
        ("http_conditional_probe_runs_total", 2.0),
        ("http_conditional_probe_cache_hits_total", 1.0),
        ("http_conditional_body_sent_bytes_total", 40.0),
        ("http_conditional_not_modified_saved_bytes_total", 10.0),
        (
            "http_conditional_request_duration_seconds_count{decision=\"failed\"}",
            2.0,
        ),
        ("http_conditional_requests_waiting{queue=\"slot\"}", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(sample(&m, name), Some(value), "{name}");
    }
}

#[test]
fn a_304_saves_the_last_full_body_of_the_same_script_and_query_only() {
    let m = metrics();
    m.record(&outcome(200, Answer::Ran, 100, "/a"), Duration::ZERO, "x=1");
    m.record(&outcome(200, Answer::Ran, 70, "/a"), Duration::ZERO, "x=1");
    // A cut-short 200 is no full body; a 206 is not one either.
    m.record(
        &Outcome {
            complete: false,
            ..outcome(200, Answer::Ran, 5, "/a")
        },
        Duration::ZERO,
        "x=1",
    );
    m.record(&outcome(206, Answer::Ran, 3, "/a"), Duration::ZERO, "x=1");
    m.record(
        &outcome(304, not_modified(), 0, "/a"),
        Duration::ZERO,
        "x=1",
    );
    // Other query, other script: never seen in full, nothing known to be saved.
    m.record(
        &outcome(304, not_modified(), 0, "/a"),
        Duration::ZERO,
        "x=2",
    );
    m.record(
        &outcome(304, not_modified(), 0, "/b"),
        Duration::ZERO,
        "x=1",
    );
    // A pass-through 304 after running saves bandwidth too.
    let after = Answer::AfterRunning(Rule::IfNoneMatchMatched);
    m.record(&outcome(304, after, 0, "/a"), Duration::ZERO, "x=1");
    assert_eq!(
        sample(&m, "http_conditional_not_modified_saved_bytes_total"),
        Some(140.0)
    );
}

#[test]
fn the_saved_bytes_map_stays_bounded() {
    let m = metrics();
    for i in 0..SAVED_BYTES_KEYS + 50 {
        m.record(
            &outcome(200, Answer::Ran, 1, "/a"),
            Duration::ZERO,
            &i.to_string(),
        );
    }
    assert_eq!(m.lock_sizes().len(), SAVED_BYTES_KEYS);
}

#[test]
fn in_flight_counts_until_the_guard_drops() {
    let m = metrics();
    let first = m.in_flight();
    let second = m.in_flight();
    assert_eq!(sample(&m, "http_conditional_requests_in_flight"), Some(2.0));
    drop(first);
    drop(second);
    assert_eq!(sample(&m, "http_conditional_requests_in_flight"), Some(0.0));
}

#[test]
fn prometheus_text_names_counter_families_with_total_and_drops_unit_and_eof() {
    let openmetrics = "# HELP a_bytes A.\n# TYPE a_bytes counter\n# UNIT a_bytes bytes\n\
                       a_bytes_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
    assert_eq!(
        prometheus_text(openmetrics),
        "# HELP a_bytes_total A.\n# TYPE a_bytes_total counter\na_bytes_total 3\n\
         # HELP g G.\n# TYPE g gauge\ng 1\n"
    );
}

#[test]
fn openmetrics_is_served_when_the_scraper_accepts_it() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let table = [
        (Some(prometheus), Exposition::OpenMetrics),
        (None, Exposition::PrometheusText),
        (Some("*/*"), Exposition::PrometheusText),
        (Some("text/plain"), Exposition::PrometheusText),
        (
            Some("application/openmetrics-text; q=0"),
            Exposition::PrometheusText,
        ),
    ];
    for (accept, expected) in table {
        let value = accept.map(|a| hyper::header::HeaderValue::from_str(a).unwrap());
        assert_eq!(negotiate(value.as_ref()), expected, "{accept:?}");
    }
}
