//! `--metrics HOST:PORT` and `--log-format json` through the built binary: `serve` and the
//! FastCGI responder answer a known mix (200, 304, 412, 404, 502), and their /metrics then
//! shows exactly those requests; `promtool check metrics` accepts the exposition; a real
//! Prometheus server scrapes the responder and its HTTP API shows the counters moving by
//! exactly the requests sent; every JSON log line parses with serde_json.

mod common;
mod fastcgi_support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Spawned, TempDir, bin, free_port, require, wait_for_port};
use fastcgi_support::http::{self, HttpResponse};
use fastcgi_support::php_fpm::{PhpFpm, Pool};
use fastcgi_support::{PATIENCE, Responder, eventually};

/// Prometheus on 2 shared cores takes a while to start and to take its first scrapes.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(90);

/// A declared page (200, then 304 and 412 without running), and a script that fails (502).
fn write_scripts(dir: &TempDir) {
    dir.write(
        "page.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n",
        true,
    );
    dir.sidecar("page.cgi", r#"{"last_modified": 1089308034}"#);
    dir.write(
        "broken.cgi",
        "#!/bin/sh\nprintf 'broken \\033[31mred\\n' >&2\nexit 3\n",
        true,
    );
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// `http-conditional serve` with `--metrics`, its stderr in a file, killed when dropped.
struct Served {
    dir: TempDir,
    port: u16,
    metrics: u16,
    log: PathBuf,
    _process: Spawned,
}

impl Served {
    fn start(flags: &[&str]) -> Served {
        let dir = TempDir::new("metrics-serve");
        write_scripts(&dir);
        let (port, metrics) = (free_port(), free_port());
        let log = dir.join("serve.log");
        let child = Command::new(bin())
            .args(["serve", "--root"])
            .arg(&dir.path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .args(flags)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start serve");
        let process = Spawned::new(child);
        for p in [port, metrics] {
            assert!(wait_for_port(local(p), PATIENCE), "serve did not listen");
        }
        Served {
            dir,
            port,
            metrics,
            log,
            _process: process,
        }
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http::get(local(self.port), target, headers)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The known mix through serve: 200, 304, 412, 404, 502; the 404's and the 502's body sizes.
fn send_mix_to_serve(server: &Served) -> (u64, u64) {
    let first = server.get("/page.cgi", &[]);
    assert_eq!(first.status, 200);
    let etag = first.header("ETag").expect("ETag").to_string();
    assert_eq!(
        server.get("/page.cgi", &[("If-None-Match", &etag)]).status,
        304
    );
    assert_eq!(
        server.get("/page.cgi", &[("If-Match", "\"other\"")]).status,
        412
    );
    let missing = server.get("/missing.cgi", &[]);
    assert_eq!(missing.status, 404);
    let broken = server.get("/broken.cgi", &[]);
    assert_eq!(broken.status, 502);
    (missing.body.len() as u64, broken.body.len() as u64)
}

/// GET /metrics as curl or promtool would (Prometheus text), or as Prometheus does.
fn scrape(port: u16, openmetrics: bool) -> HttpResponse {
    let accept = match openmetrics {
        true => "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        false => "*/*",
    };
    let reply = http::get(local(port), "/metrics", &[("Accept", accept)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

/// Samples by name with labels, as written: `name{label="v"}` → value.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The counters the mix moves, with the values it gives them. The 404 runs nothing; the 502
/// ran its script; the 304 saved the 6 bytes of the 200 before it.
fn expected_after_mix(not_found_body: u64, failed_body: u64) -> Vec<(String, f64)> {
    let failed = "http_conditional_failures_total";
    vec![
        (
            "http_conditional_responses_total{decision=\"ran\"}".into(),
            1.0,
        ),
        (
            "http_conditional_responses_total{decision=\"not_modified\"}".into(),
            1.0,
        ),
        (
            "http_conditional_responses_total{decision=\"precondition_failed\"}".into(),
            1.0,
        ),
        (
            "http_conditional_responses_total{decision=\"failed\"}".into(),
            2.0,
        ),
        (format!("{failed}{{kind=\"not_found\"}}"), 1.0),
        (format!("{failed}{{kind=\"script_failed\"}}"), 1.0),
        (
            "http_conditional_script_runs_total{backend=\"process\"}".into(),
            2.0,
        ),
        ("http_conditional_runs_avoided_total".into(), 2.0),
        ("http_conditional_probe_runs_total".into(), 0.0),
        (
            "http_conditional_body_sent_bytes_total".into(),
            // The page's 6 bytes, the 412's text, the 404's and the 502's.
            (6 + "412 Precondition Failed\n".len() as u64 + not_found_body + failed_body) as f64,
        ),
        (
            "http_conditional_not_modified_saved_bytes_total".into(),
            6.0,
        ),
        (
            "http_conditional_request_duration_seconds_count{decision=\"failed\"}".into(),
            2.0,
        ),
        ("http_conditional_requests_in_flight".into(), 0.0),
        (
            "http_conditional_requests_waiting{queue=\"slot\"}".into(),
            0.0,
        ),
    ]
}

fn assert_samples(exposition: &str, expected: &[(String, f64)]) {
    let found = samples(exposition);
    for (name, value) in expected {
        assert_eq!(found.get(name), Some(value), "{name} in:\n{exposition}");
    }
}

/// `promtool check metrics` on `exposition`: no error and no lint problem.
fn promtool_accepts(exposition: &str) {
    let Some(promtool) = require("promtool") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_metrics_count_exactly_the_requests_sent() {
    let server = Served::start(&[]);
    let bodies = send_mix_to_serve(&server);
    let text = scrape(server.metrics, false);
    assert!(
        text.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        text.headers
    );
    let expected = expected_after_mix(bodies.0, bodies.1);
    assert_samples(&text.text(), &expected);
    promtool_accepts(&text.text());

    let openmetrics = scrape(server.metrics, true);
    assert!(
        openmetrics
            .header("Content-Type")
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{:?}",
        openmetrics.headers
    );
    assert!(openmetrics.text().ends_with("# EOF\n"));
    assert_samples(&openmetrics.text(), &expected);

    assert_eq!(http::get(local(server.metrics), "/", &[]).status, 404);
    assert_eq!(
        http::get(local(server.metrics), "/metrics/x", &[]).status,
        404
    );
    drop(server.dir);
}

#[test]
fn fastcgi_metrics_count_exactly_the_requests_sent() {
    let dir = TempDir::new("metrics-fastcgi");
    write_scripts(&dir);
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let responder = Responder::start(&dir.path, &dir.join("hc.sock"), &["--metrics", &address]);
    assert!(wait_for_port(local(metrics), PATIENCE), "no metrics port");
    let bodies = send_mix_to_responder(&responder, &dir.path);
    let text = scrape(metrics, false).text();
    assert_samples(&text, &expected_after_mix(bodies.0, bodies.1));
    promtool_accepts(&text);
}

/// The known mix through the FastCGI responder; the 404's and the 502's body sizes.
fn send_mix_to_responder(responder: &Responder, root: &Path) -> (u64, u64) {
    let get =
        |name: &str, extra: &[(&str, &str)]| fastcgi_support::get(responder, root, name, extra);
    let first = get("page.cgi", &[]);
    assert_eq!(first.status(), 200, "{}", responder.log_text());
    let etag = first.header("ETag").expect("ETag");
    assert_eq!(
        get("page.cgi", &[("HTTP_IF_NONE_MATCH", &etag)]).status(),
        304
    );
    assert_eq!(
        get("page.cgi", &[("HTTP_IF_MATCH", "\"other\"")]).status(),
        412
    );
    let missing = get("missing.cgi", &[]);
    assert_eq!(missing.status(), 404);
    let broken = get("broken.cgi", &[]);
    assert_eq!(broken.status(), 502);
    (missing.body().len() as u64, broken.body().len() as u64)
}

/// Prometheus started on a free port with a temp config and storage, killed when dropped.
struct Prometheus {
    port: u16,
    log: PathBuf,
    _process: Spawned,
}

impl Prometheus {
    fn start(dir: &TempDir, target: u16) -> Option<Prometheus> {
        let program = require("prometheus")?;
        let port = free_port();
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: responder\n    static_configs:\n\
                 \x20     - targets: ['127.0.0.1:{target}']\n"
            ),
            false,
        );
        let log = dir.join("prometheus.log");
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            port,
            log,
            _process: Spawned::new(child),
        };
        assert!(
            wait_for_port(local(port), PROMETHEUS_PATIENCE),
            "prometheus did not listen: {}",
            prometheus.log()
        );
        Some(prometheus)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/v1/query?query=QUERY`: each series' labels (as `k=v,...`) and value.
    fn query(&self, query: &str) -> BTreeMap<String, f64> {
        let reply = http::get(
            local(self.port),
            &format!("/api/v1/query?query={query}"),
            &[],
        );
        let mut found = BTreeMap::new();
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&reply.body) else {
            return found;
        };
        for series in json["data"]["result"].as_array().into_iter().flatten() {
            let labels: Vec<String> = series["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job"))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            if let Some(value) = series["value"][1].as_str().and_then(|v| v.parse().ok()) {
                found.insert(labels.join(","), value);
            }
        }
        found
    }

    /// Waits until `query` gives exactly `expected`; fails with what it last gave.
    fn wait_for(&self, query: &str, expected: &[(&str, f64)]) {
        let expected: BTreeMap<String, f64> =
            expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let mut last = BTreeMap::new();
        let matched = eventually(PROMETHEUS_PATIENCE, || {
            last = self.query(query);
            last == expected
        });
        assert!(
            matched,
            "{query}: expected {expected:?}, Prometheus last gave {last:?}\n{}",
            self.log()
        );
    }
}

#[test]
fn a_real_prometheus_sees_the_counters_move_by_exactly_the_requests_sent() {
    let dir = TempDir::new("metrics-prometheus");
    write_scripts(&dir);
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let responder = Responder::start(&dir.path, &dir.join("hc.sock"), &["--metrics", &address]);
    assert!(wait_for_port(local(metrics), PATIENCE), "no metrics port");
    let Some(prometheus) = Prometheus::start(&dir, metrics) else {
        return;
    };
    // Before: one 200.
    assert_eq!(
        fastcgi_support::get(&responder, &dir.path, "page.cgi", &[]).status(),
        200
    );
    prometheus.wait_for("up", &[("", 1.0)]);
    prometheus.wait_for("http_conditional_responses_total", &[("decision=ran", 1.0)]);
    // Then the mix: the counters move by exactly its requests.
    send_mix_to_responder(&responder, &dir.path);
    prometheus.wait_for(
        "http_conditional_responses_total",
        &[
            ("decision=ran", 2.0),
            ("decision=not_modified", 1.0),
            ("decision=precondition_failed", 1.0),
            ("decision=failed", 2.0),
        ],
    );
    prometheus.wait_for(
        "http_conditional_failures_total",
        &[("kind=not_found", 1.0), ("kind=script_failed", 1.0)],
    );
    prometheus.wait_for("http_conditional_runs_avoided_total", &[("", 2.0)]);
    prometheus.wait_for(
        "http_conditional_not_modified_saved_bytes_total",
        &[("", 6.0)],
    );
    prometheus.wait_for(
        "http_conditional_request_duration_seconds_count",
        &[
            ("decision=ran", 2.0),
            ("decision=not_modified", 1.0),
            ("decision=precondition_failed", 1.0),
            ("decision=failed", 2.0),
        ],
    );
}

/// Every line of `log` as JSON; fails on a line that is not one object.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{log}"));
            assert!(value.is_object(), "{line}");
            assert!(
                value["time"].is_string() && value["event"].is_string(),
                "{line}"
            );
            value
        })
        .collect()
}

#[test]
fn serve_json_logs_are_one_object_per_line_with_stable_fields() {
    let server = Served::start(&["--log-format", "json"]);
    send_mix_to_serve(&server);
    let mut lines = Vec::new();
    assert!(
        eventually(PATIENCE, || {
            lines = json_lines(&server.log());
            lines.iter().filter(|l| l["event"] == "access").count() == 5
        }),
        "{}",
        server.log()
    );
    // Each access line is written once its response has gone out, so two lines may swap.
    let mut access: Vec<_> = lines.iter().filter(|l| l["event"] == "access").collect();
    access.sort_by_key(|l| match l["status"].as_u64() {
        Some(200) => 0,
        Some(304) => 1,
        Some(412) => 2,
        Some(404) => 3,
        _ => 4,
    });
    let statuses: Vec<u64> = access.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, [200, 304, 412, 404, 502]);
    let first = access[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["target"], "/page.cgi");
    assert_eq!(first["decision"], "ran script");
    assert_eq!(first["bytes"], 6);
    assert_eq!(first["complete"], true);
    assert!(first["duration_seconds"].as_f64().is_some());
    // The script's stderr: its name and line apart, the escape byte shown as the text log
    // shows it, never raw.
    let stderr = lines
        .iter()
        .find(|l| l["event"] == "script_stderr")
        .expect("a script_stderr line");
    assert_eq!(stderr["script"], "/broken.cgi");
    assert_eq!(stderr["line"], "broken \\x1b[31mred");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "message" && l["message"].as_str().is_some()),
        "{}",
        server.log()
    );
}

#[test]
fn fastcgi_json_logs_parse() {
    let dir = TempDir::new("metrics-fastcgi-json");
    write_scripts(&dir);
    let responder = Responder::start(&dir.path, &dir.join("hc.sock"), &["--log-format", "json"]);
    let missing_root = fastcgi_support::get(&responder, &dir.path, "missing.cgi", &[]);
    assert_eq!(missing_root.status(), 404);
    let broken = fastcgi_support::get(&responder, &dir.path, "broken.cgi", &[]);
    assert_eq!(broken.status(), 502);
    let mut lines = Vec::new();
    assert!(
        eventually(PATIENCE, || {
            lines = json_lines(&responder.log_text());
            lines.iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("broken.cgi"))
            })
        }),
        "{}",
        responder.log_text()
    );
    assert!(lines.iter().all(|l| l["event"] == "message"));
}

/// The samples of a Prometheus-text scrape of `port`.
fn scraped(port: u16) -> BTreeMap<String, f64> {
    samples(&scrape(port, false).text())
}

#[test]
fn a_request_waiting_for_a_script_slot_is_counted_while_it_waits() {
    let dir = TempDir::new("metrics-waiting");
    write_scripts(&dir);
    let release = dir.join("release");
    // Holds its slot until the test creates the release file (bounded: 60 s at most).
    dir.write(
        "hold.cgi",
        format!(
            "#!/bin/sh\ni=0\nwhile [ ! -e {} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n\
             printf 'Content-Type: text/plain\\n\\nheld\\n'\n",
            release.display()
        ),
        true,
    );
    let metrics = free_port();
    let address = format!("127.0.0.1:{metrics}");
    let responder = Responder::start(
        &dir.path,
        &dir.join("hc.sock"),
        &["--metrics", &address, "--max-children", "1"],
    );
    assert!(wait_for_port(local(metrics), PATIENCE), "no metrics port");
    let params = fastcgi_support::cgi_params(&dir.path, "hold.cgi");
    let mut clients: Vec<_> = (0..2).map(|_| responder.connect()).collect();
    for client in &mut clients {
        client
            .send_request(1, false, &fastcgi_support::as_refs(&params), b"")
            .expect("send");
    }
    let waiting = "http_conditional_requests_waiting{queue=\"slot\"}";
    let mut last = BTreeMap::new();
    let seen = eventually(PATIENCE, || {
        last = scraped(metrics);
        last.get(waiting) == Some(&1.0)
            && last.get("http_conditional_requests_in_flight") == Some(&2.0)
    });
    std::fs::write(&release, b"").unwrap();
    assert!(seen, "never one waiting and two in flight: {last:?}");
    for client in &mut clients {
        assert_eq!(client.read_reply(1).status(), 200);
    }
    let after = scraped(metrics);
    assert_eq!(after.get(waiting), Some(&0.0));
    assert_eq!(after.get("http_conditional_requests_in_flight"), Some(&0.0));
    assert_eq!(
        after.get("http_conditional_responses_total{decision=\"ran\"}"),
        Some(&2.0)
    );
}

#[test]
fn runs_on_an_upstream_and_its_connections_are_counted() {
    // The upstream is php-fpm, a real FastCGI application.
    let dir = TempDir::new("metrics-upstream");
    dir.write("page.php", "<?php echo \"hello\\n\";\n", false);
    dir.sidecar("page.php", r#"{"last_modified": 1089308034}"#);
    let Some(fpm) = PhpFpm::start(&dir.join("fpm"), Pool::default()) else {
        return;
    };
    let metrics = free_port();
    let upstream = format!("unix:{}", fpm.socket.display());
    let address = format!("127.0.0.1:{metrics}");
    let responder = Responder::start(
        &dir.path,
        &dir.join("hc.sock"),
        &["--metrics", &address, "--upstream", &upstream],
    );
    assert!(wait_for_port(local(metrics), PATIENCE), "no metrics port");
    let first = fastcgi_support::get(&responder, &dir.path, "page.php", &[]);
    assert_eq!(
        first.status(),
        200,
        "{}{}{}",
        String::from_utf8_lossy(&first.stdout),
        responder.log_text(),
        fpm.error_log()
    );
    assert_eq!(first.body(), b"hello\n");
    let etag = first.header("ETag").expect("ETag");
    let extra = [("HTTP_IF_NONE_MATCH", etag.as_str())];
    assert_eq!(
        fastcgi_support::get(&responder, &dir.path, "page.php", &extra).status(),
        304
    );
    let found = scraped(metrics);
    let labels = format!("upstream=\"{upstream}\"");
    let expected = [
        (
            "http_conditional_script_runs_total{backend=\"fastcgi\"}".to_string(),
            1.0,
        ),
        (
            format!("http_conditional_upstream_connections_opened_total{{{labels}}}"),
            1.0,
        ),
        (
            format!("http_conditional_upstream_connections{{{labels},state=\"in_use\"}}"),
            0.0,
        ),
        ("http_conditional_runs_avoided_total".to_string(), 1.0),
        (
            "http_conditional_not_modified_saved_bytes_total".to_string(),
            6.0,
        ),
        (
            "http_conditional_requests_waiting{queue=\"upstream_connection\"}".to_string(),
            0.0,
        ),
    ];
    for (name, value) in &expected {
        assert_eq!(found.get(name), Some(value), "{name}: {found:?}");
    }
    promtool_accepts(&scrape(metrics, false).text());
}
