//! Site rules (`--rules FILE`, `CONDITIONAL_RULES`) through the real parts: the built binary in
//! CGI mode, `serve`, and the FastCGI responder behind real nginx, each given the same site and
//! the same rules file, then asked the same questions.

mod common;
mod fastcgi_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Cgi, Spawned, TempDir, bin, require, set_mtime, wait_with_timeout};
use fastcgi_support::http::{self, HttpResponse};
use fastcgi_support::nginx::Nginx;
use fastcgi_support::{PATIENCE, Responder, eventually, signal};

/// PATH for scripts and probes unless a test puts a counting `sqlite3` in front.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The scripts' own mtime: older than every data file, so a data file's time shows.
const SCRIPT_TIME: u64 = 1_000_000_000;
const SCRIPT_DATE: &str = "Sun, 09 Sep 2001 01:46:40 GMT";
/// data/a.txt, data/b.txt, data/wiki/Home.txt and secret.txt (outside data/, newest of all).
const A_TIME: u64 = 1_500_000_000;
const A_DATE: &str = "Fri, 14 Jul 2017 02:40:00 GMT";
const B_TIME: u64 = 1_500_000_100;
const B_DATE: &str = "Fri, 14 Jul 2017 02:41:40 GMT";
const HOME_TIME: u64 = 1_550_000_000;
const HOME_DATE: &str = "Tue, 12 Feb 2019 19:33:20 GMT";
const SECRET_TIME: u64 = 1_600_000_000;
/// What the probe command answers.
const PROBE_DATE: &str = "Fri, 14 Jul 2017 02:43:20 GMT";

/// One way of serving a folder of scripts with a rules file.
enum FrontEnd {
    /// The binary run per request as a CGI program, `CONDITIONAL_RULES` naming the file.
    Cgi {
        www: PathBuf,
        rules: PathBuf,
        path_var: String,
    },
    /// `serve --rules`.
    Serve {
        process: Spawned,
        addr: std::net::SocketAddr,
        log: PathBuf,
    },
    /// `fastcgi --rules` behind nginx with the shipped server block.
    Nginx { nginx: Nginx, responder: Responder },
}

impl FrontEnd {
    fn cgi(www: &Path, rules: &Path, path_var: &str) -> FrontEnd {
        FrontEnd::Cgi {
            www: www.to_path_buf(),
            rules: rules.to_path_buf(),
            path_var: path_var.to_string(),
        }
    }

    fn serve(dir: &TempDir, www: &Path, rules: &Path, path_var: &str) -> FrontEnd {
        let log = dir.join("serve.log");
        let flags = ["--rules", &rules.display().to_string()];
        let (process, port) = common::start_serve(www, &log, &flags, path_var);
        FrontEnd::Serve {
            process,
            addr: ([127, 0, 0, 1], port).into(),
            log,
        }
    }

    /// `None` (a skip) when nginx is not installed outside CI.
    fn nginx(dir: &TempDir, www: &Path, rules: &Path, path_var: &str) -> Option<FrontEnd> {
        // The responder's own PATH is what its scripts and probes get (nginx passes none).
        let mut launcher = Command::new("sh");
        launcher
            .arg("-c")
            .arg(format!("PATH='{path_var}' exec \"$0\" \"$@\""))
            .arg(bin());
        let rules = rules.display().to_string();
        let responder =
            Responder::start_via(launcher, www, &dir.join("hc.sock"), &["--rules", &rules]);
        let nginx = Nginx::start(dir, www, &responder.socket)?;
        Some(FrontEnd::Nginx { nginx, responder })
    }

    /// GET `target` (`/script.cgi/path/info?query`) with request headers by their HTTP names.
    fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        match self {
            FrontEnd::Cgi {
                www,
                rules,
                path_var,
            } => {
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let end = path.find(".cgi").map_or(path.len(), |i| i + 4);
                let (script_name, path_info) = path.split_at(end);
                let mut cgi = Cgi::new(&www.join(&script_name[1..]))
                    .env("QUERY_STRING", query)
                    .env("SCRIPT_NAME", script_name)
                    .env("DOCUMENT_ROOT", www)
                    .env("PATH", path_var)
                    .env("CONDITIONAL_RULES", rules)
                    .timeout(PATIENCE);
                if !path_info.is_empty() {
                    cgi = cgi.env("PATH_INFO", path_info);
                }
                for (name, value) in headers {
                    cgi = cgi.header(&name.to_ascii_uppercase().replace('-', "_"), *value);
                }
                let r = cgi.run();
                HttpResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                }
            }
            FrontEnd::Serve { addr, .. } => http::get(*addr, target, headers),
            FrontEnd::Nginx { nginx, .. } => http::get(nginx.addr, target, headers),
        }
    }

    /// Whether probe answers are kept for `probe_ttl`: only in the long-running modes (CGI mode
    /// starts afresh for every request and has nowhere to keep them).
    fn caches_probes(&self) -> bool {
        !matches!(self, FrontEnd::Cgi { .. })
    }

    /// The long-running process's PID and its log so far.
    fn process(&self) -> (u32, String) {
        match self {
            FrontEnd::Cgi { .. } => panic!("CGI mode has no long-running process"),
            FrontEnd::Serve { process, log, .. } => (
                process.pid(),
                std::fs::read_to_string(log).unwrap_or_default(),
            ),
            FrontEnd::Nginx { responder, .. } => (responder.pid(), responder.log_text()),
        }
    }

    /// Sends SIGHUP and waits for the log line that says what came of it.
    fn hang_up(&self, expected: &str) -> String {
        let before = self.process().1.matches("SIGHUP").count();
        signal(self.process().0, "HUP");
        assert!(
            eventually(PATIENCE, || self.process().1.matches("SIGHUP").count()
                > before),
            "no SIGHUP line in the log: {}",
            self.process().1
        );
        let log = self.process().1;
        let last = &log[log.rfind("SIGHUP").unwrap_or(0)..];
        assert!(last.contains(expected), "{expected:?} not in {last:?}");
        last.to_string()
    }
}

/// The site every front end serves: scripts in www/, the rules file and the data in conf/, so
/// every relative path in the rules file is from conf/, not from the scripts' folder.
struct Site {
    dir: TempDir,
    www: PathBuf,
    conf: PathBuf,
    rules: PathBuf,
}

const RULES: &str = r#"
[defaults]
cache_privacy = "public"
cache_seconds = 5

[[rule]]
match = "../www/first.cgi"
cache_seconds = 60

[[rule]]
match = "../www/item.cgi"
depends_on = ["data/{query.id}.txt"]

[[rule]]
match = "../www/wiki.cgi"
depends_on = ["data/wiki{path_info}.txt"]

[[rule]]
match = "../www/env.cgi"
env = { GREETING = "hello from the rules" }

[[rule]]
match = "../www/probed.cgi"
probe_command = ["PROBE"]
probe_ttl = 600

[[rule]]
match = "../www/*.cgi"
cache_seconds = 30

[[rule]]
match = "../www/first.cgi"
cache_seconds = 999
"#;

impl Site {
    fn new(label: &str) -> Site {
        let dir = TempDir::new(label);
        let www = dir.join("www");
        let conf = dir.join("conf");
        for name in [
            "first",
            "page",
            "tuned",
            "sub/plain",
            "item",
            "wiki",
            "env",
            "probed",
        ] {
            let script = dir.write(
                &format!("www/{name}.cgi"),
                format!(
                    "#!/bin/sh\necho run >> {runs}\nprintf 'Content-Type: text/plain\\n\\n'\n\
                     echo \"{name} GREETING=$GREETING query=$QUERY_STRING\"\n",
                    runs = conf
                        .join(format!("{}.runs", name.replace('/', "-")))
                        .display()
                ),
                true,
            );
            set_mtime(&script, SCRIPT_TIME);
        }
        // One field overridden by a sidecar; cache_seconds still comes from the rule.
        dir.sidecar("www/tuned.cgi", r#"{"cache_privacy": "private"}"#);
        for (name, time) in [
            ("conf/data/a.txt", A_TIME),
            ("conf/data/b.txt", B_TIME),
            ("conf/data/wiki/Home.txt", HOME_TIME),
            ("conf/secret.txt", SECRET_TIME),
        ] {
            set_mtime(&dir.write(name, "data\n", false), time);
        }
        // The probe logs each run (with its query string) and fails when asked to.
        let probe = dir.write(
            "conf/probe.sh",
            format!(
                "#!/bin/sh\necho \"$QUERY_STRING\" >> {runs}\n\
                 case \"$QUERY_STRING\" in *fail*) [ -e {flag} ] && exit 1 ;; esac\n\
                 echo 1500000200\n",
                runs = conf.join("probe.runs").display(),
                flag = conf.join("probe-fails").display(),
            ),
            true,
        );
        let rules = dir.write(
            "conf/site.toml",
            RULES.replace("PROBE", &probe.display().to_string()),
            false,
        );
        Site {
            dir,
            www,
            conf,
            rules,
        }
    }

    fn cgi(&self) -> FrontEnd {
        FrontEnd::cgi(&self.www, &self.rules, SYSTEM_PATH)
    }

    fn serve(&self) -> FrontEnd {
        FrontEnd::serve(&self.dir, &self.www, &self.rules, SYSTEM_PATH)
    }

    fn nginx(&self) -> Option<FrontEnd> {
        FrontEnd::nginx(&self.dir, &self.www, &self.rules, SYSTEM_PATH)
    }

    /// How many times the script `name` (`sub-plain` for sub/plain.cgi) has run.
    fn runs(&self, name: &str) -> usize {
        lines(&self.conf.join(format!("{name}.runs")))
            .filter(|l| *l == "run")
            .count()
    }

    /// How many times the probe ran for the query string `query`.
    fn probe_runs(&self, query: &str) -> usize {
        lines(&self.conf.join("probe.runs"))
            .filter(|l| *l == query)
            .count()
    }
}

fn lines(path: &Path) -> impl Iterator<Item = String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into_iter()
}

fn ok(front: &FrontEnd, target: &str) -> HttpResponse {
    let r = front.get(target, &[]);
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r
}

fn etag(r: &HttpResponse) -> String {
    r.header("ETag").expect("an ETag").to_string()
}

/// Everything the rules file declares, asked of one front end.
fn the_rules_file_declares_the_site(site: &Site, front: &FrontEnd) {
    // Rules are tried in file order and the first match applies; [defaults] fill the rest.
    let first = ok(front, "/first.cgi");
    assert_eq!(first.header("Cache-Control"), Some("public, max-age=60"));
    assert_eq!(
        ok(front, "/page.cgi").header("Cache-Control"),
        Some("public, max-age=30")
    );
    // A sidecar overrides one field of its rule, the others stay the rule's.
    assert_eq!(
        ok(front, "/tuned.cgi").header("Cache-Control"),
        Some("private, max-age=30")
    );
    // `*` stays within one path segment: www/sub/plain.cgi is declared by nothing.
    let plain = ok(front, "/sub/plain.cgi");
    assert!(
        plain.header("ETag").is_none() && plain.header("Last-Modified").is_none(),
        "a script no rule matches is passed through: {:?}",
        plain.headers
    );

    // A declared script's 304 comes without running it.
    let runs = site.runs("page");
    let not_modified = front.get("/page.cgi", &[("If-None-Match", &etag(&first))]);
    assert_eq!(not_modified.status, 200, "another script's ETag");
    let page = ok(front, "/page.cgi");
    let not_modified = front.get("/page.cgi", &[("If-None-Match", &etag(&page))]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(
        not_modified.header("Cache-Control"),
        Some("public, max-age=30")
    );
    assert_eq!(site.runs("page"), runs + 2, "the 304 ran nothing");

    // {query.id} picks the data file, relative to the rules file's folder.
    let a = ok(front, "/item.cgi?id=a");
    let b = ok(front, "/item.cgi?id=b");
    assert_eq!(a.header("Last-Modified"), Some(A_DATE));
    assert_eq!(b.header("Last-Modified"), Some(B_DATE));
    set_mtime(&site.conf.join("data/a.txt"), A_TIME + 1);
    let a2 = ok(front, "/item.cgi?id=a");
    assert_ne!(etag(&a2), etag(&a), "a's data changed");
    assert_eq!(
        etag(&ok(front, "/item.cgi?id=b")),
        etag(&b),
        "b's data did not"
    );
    // A value that climbs out of data/ names nothing: the page is the script's own time, not
    // that of secret.txt (the newest file of all).
    for escape in [
        "id=../secret",
        "id=%2e%2e/secret",
        "id=..%2fsecret",
        "id=%2E%2E%2Fsecret",
        "id=a/../../secret",
        "id=%00",
    ] {
        let r = ok(front, &format!("/item.cgi?{escape}"));
        assert_eq!(r.header("Last-Modified"), Some(SCRIPT_DATE), "{escape}");
    }
    // {path_info} too.
    let home = ok(front, "/wiki.cgi/Home");
    assert_eq!(home.header("Last-Modified"), Some(HOME_DATE));
    assert_eq!(
        ok(front, "/wiki.cgi/Missing").header("Last-Modified"),
        Some(SCRIPT_DATE)
    );

    // `env` reaches the script (behind nginx scripts see only params and PATH otherwise).
    assert!(
        ok(front, "/env.cgi")
            .text()
            .contains("GREETING=hello from the rules"),
        "env did not reach the script"
    );
    assert!(
        ok(front, "/page.cgi").text().contains("GREETING= "),
        "env is the rule's alone"
    );

    the_probe_command_is_asked_and_kept_for_its_ttl(site, front);
}

/// probe_command with probe_ttl: the long-running modes ask once per key within the TTL and
/// once for a burst of cold requests; CGI mode, which keeps nothing between requests, asks
/// every time. A failed probe is never kept.
fn the_probe_command_is_asked_and_kept_for_its_ttl(site: &Site, front: &FrontEnd) {
    let probed = ok(front, "/probed.cgi?k=warm");
    assert_eq!(probed.header("Last-Modified"), Some(PROBE_DATE));
    let runs = site.runs("probed");
    for _ in 0..3 {
        let r = front.get("/probed.cgi?k=warm", &[("If-None-Match", &etag(&probed))]);
        assert_eq!(r.status, 304);
    }
    assert_eq!(site.runs("probed"), runs, "a 304 runs no page");
    let expected = if front.caches_probes() { 1 } else { 4 };
    assert_eq!(
        site.probe_runs("k=warm"),
        expected,
        "probe runs within the TTL"
    );

    if front.caches_probes() {
        let burst: Vec<HttpResponse> = std::thread::scope(|scope| {
            let requests: Vec<_> = (0..10)
                .map(|_| scope.spawn(|| front.get("/probed.cgi?k=burst", &[])))
                .collect();
            requests.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for r in &burst {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("Last-Modified"), Some(PROBE_DATE));
        }
        assert_eq!(
            site.probe_runs("k=burst"),
            1,
            "ten concurrent cold requests share one probe run"
        );
    }

    std::fs::write(site.conf.join("probe-fails"), "").unwrap();
    for attempt in 1..=2 {
        let r = front.get("/probed.cgi?k=fail", &[]);
        assert_eq!(r.status, 502, "a failed probe: {}", r.text());
        assert_eq!(site.probe_runs("k=fail"), attempt, "a failure is not kept");
    }
    std::fs::remove_file(site.conf.join("probe-fails")).unwrap();
    ok(front, "/probed.cgi?k=fail");
    assert_eq!(site.probe_runs("k=fail"), 3);
}

#[test]
fn cgi_mode_reads_the_rules_named_by_conditional_rules() {
    let site = Site::new("rules-cgi");
    the_rules_file_declares_the_site(&site, &site.cgi());
}

#[test]
fn serve_declares_scripts_by_its_rules_file() {
    let site = Site::new("rules-serve");
    the_rules_file_declares_the_site(&site, &site.serve());
}

#[test]
fn the_fastcgi_responder_behind_nginx_declares_scripts_by_its_rules_file() {
    let site = Site::new("rules-nginx");
    let Some(front) = site.nginx() else {
        return;
    };
    the_rules_file_declares_the_site(&site, &front);
}

/// SIGHUP re-reads the file: a new rule applies; a file that fails keeps the rules in use and
/// the log says why, with line and column.
fn sighup_rereads_the_rules(site: &Site, front: &FrontEnd) {
    assert!(ok(front, "/sub/plain.cgi").header("ETag").is_none());
    let with_sub = format!("[[rule]]\nmatch = \"../www/sub/*.cgi\"\ncache_seconds = 7\n{RULES}")
        .replace("PROBE", "/bin/false");
    std::fs::write(&site.rules, &with_sub).unwrap();
    front.hang_up("rules re-read, 8 rule(s)");
    let plain = ok(front, "/sub/plain.cgi");
    assert_eq!(plain.header("Cache-Control"), Some("public, max-age=7"));

    std::fs::write(
        &site.rules,
        "[[rule]]\nmatch = \"../www/*.cgi\"\ncache_secondz = 1\n",
    )
    .unwrap();
    let line = front.hang_up("rules kept");
    assert!(line.contains("site.toml:3:1"), "{line}");
    assert!(line.contains("cache_secondz"), "{line}");
    assert_eq!(
        ok(front, "/sub/plain.cgi").header("Cache-Control"),
        Some("public, max-age=7"),
        "the old rules stay"
    );
}

#[test]
fn sighup_rereads_the_rules_in_serve() {
    let site = Site::new("rules-hup-serve");
    sighup_rereads_the_rules(&site, &site.serve());
}

#[test]
fn sighup_rereads_the_rules_in_the_fastcgi_responder() {
    let site = Site::new("rules-hup-fcgi");
    let Some(front) = site.nginx() else {
        return;
    };
    sighup_rereads_the_rules(&site, &front);
}

/// Rules files that cannot be used, each with what the error must say.
fn bad_rules_files(dir: &TempDir) -> Vec<(PathBuf, &'static str)> {
    let fifo = dir.join("fifo.toml");
    common::mkfifo(&fifo);
    vec![
        (
            dir.write("not-toml.toml", "[[rule]\nmatch = \"*.cgi\"\n", false),
            "not TOML",
        ),
        (
            dir.write(
                "huge.toml",
                format!("# {}\n", "x".repeat(2 * 1024 * 1024)),
                false,
            ),
            "",
        ),
        (fifo, ""),
        (
            dir.write(
                "unknown.toml",
                "[[rule]]\nmatch = \"*.cgi\"\ncache_second = 5\n",
                false,
            ),
            "cache_second",
        ),
        (
            dir.write("glob.toml", "[[rule]]\nmatch = \"www/[*.cgi\"\n", false),
            "bad glob",
        ),
        (dir.join("missing.toml"), ""),
    ]
}

#[test]
fn a_bad_rules_file_in_cgi_mode_is_a_500_naming_it_never_a_hang() {
    let site = Site::new("rules-bad-cgi");
    for (file, says) in bad_rules_files(&site.dir) {
        let front = FrontEnd::cgi(&site.www, &file, SYSTEM_PATH);
        let runs = site.runs("page");
        let r = front.get("/page.cgi", &[]);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(r.status, 500, "{name}: {}", r.text());
        assert!(r.text().contains(&name), "{name}: {}", r.text());
        assert!(r.text().contains(says), "{name}: {}", r.text());
        assert_eq!(site.runs("page"), runs, "{name}: the script ran");
    }
    let r =
        FrontEnd::cgi(&site.www, &site.dir.join("unknown.toml"), SYSTEM_PATH).get("/page.cgi", &[]);
    assert!(r.text().contains("line 3, column 1"), "{}", r.text());
}

#[test]
fn serve_and_fastcgi_refuse_to_start_with_a_bad_rules_file() {
    let site = Site::new("rules-bad-start");
    for (file, says) in bad_rules_files(&site.dir) {
        for mode in ["serve", "fastcgi"] {
            let child = Command::new(bin())
                .args([mode, "--root"])
                .arg(&site.www)
                .args(["--listen", "127.0.0.1:0"])
                .args(if mode == "fastcgi" {
                    common::responder_user()
                } else {
                    &[]
                })
                .arg("--rules")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start http-conditional");
            let out = wait_with_timeout(child, PATIENCE);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!out.status.success(), "{mode} started with {name}");
            assert!(
                stderr.contains(&name) && stderr.contains(says),
                "{mode} {name}: {stderr}"
            );
        }
    }
}

/// The bundled examples, their sidecars removed, declared by examples/site.toml alone.
#[test]
fn the_examples_through_site_toml_give_the_etags_their_sidecars_give() {
    require("python3").expect("python3");
    let php = require("php-cgi").is_some();
    let dir = TempDir::new("rules-examples");
    let ex = dir.examples();
    let rules = ex.join("site.toml");
    let mut scripts = vec!["article.cgi", "feed.cgi", "label.cgi"];
    if php {
        scripts.extend(["news.php", "session.php"]);
    }
    let run = |script: &str, rules: Option<&Path>| {
        let mut cgi = Cgi::new(&ex.join(script));
        if let Some(rules) = rules {
            cgi = cgi.env("CONDITIONAL_RULES", rules);
        }
        cgi.run()
    };
    let validators = |script: &str, rules: Option<&Path>| {
        let r = run(script, rules);
        assert_eq!(r.status, 200, "{script}: {} {}", r.text(), r.stderr);
        ["ETag", "Last-Modified", "Cache-Control", "Vary"].map(|h| r.header(h).map(str::to_owned))
    };
    let by_sidecars: Vec<_> = scripts.iter().map(|s| validators(s, None)).collect();
    for script in &scripts {
        std::fs::remove_file(ex.join(format!("{script}.conditional.json"))).unwrap();
        // Undeclared now (the PHP pages, with no interpreter named, are not even run).
        assert!(run(script, None).header("ETag").is_none(), "{script}");
    }
    for (script, expected) in scripts.iter().zip(&by_sidecars) {
        assert!(expected[0].is_some(), "{script} has an ETag");
        assert_eq!(&validators(script, Some(&rules)), expected, "{script}");
    }
}

/// The bundled SQLite feed (examples/feed-db.cgi, feed-db.sql, site.toml) with a `sqlite3`
/// first in PATH that logs each run before running the real one.
struct SqliteFeed {
    dir: TempDir,
    ex: PathBuf,
    path_var: String,
}

impl SqliteFeed {
    fn new(label: &str) -> Option<SqliteFeed> {
        let sqlite3 = require("sqlite3")?;
        require("python3").expect("python3");
        let dir = TempDir::new(label);
        let ex = dir.examples();
        let sql = std::fs::read(ex.join("feed-db.sql")).unwrap();
        sqlite(&sqlite3, &ex.join("feed.db"), &sql);
        dir.write(
            "bin/sqlite3",
            format!(
                "#!/bin/sh\necho run >> {}\nexec {} \"$@\"\n",
                dir.join("sqlite3.runs").display(),
                sqlite3.display()
            ),
            true,
        );
        let path_var = format!("{}:{SYSTEM_PATH}", dir.join("bin").display());
        Some(SqliteFeed { dir, ex, path_var })
    }

    fn probe_runs(&self) -> usize {
        lines(&self.dir.join("sqlite3.runs")).count()
    }

    fn add_item(&self, modified: u64) {
        let sqlite3 = require("sqlite3").expect("sqlite3");
        let sql = format!(
            "INSERT INTO items (title, link, modified) VALUES ('Late news', 'https://example.org/news/4', {modified});"
        );
        sqlite(&sqlite3, &self.ex.join("feed.db"), sql.as_bytes());
    }
}

fn sqlite(sqlite3: &Path, db: &Path, sql: &[u8]) {
    use std::io::Write;
    let mut child = Command::new(sqlite3)
        .arg(db)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    child.stdin.take().unwrap().write_all(sql).unwrap();
    assert!(child.wait().unwrap().success(), "sqlite3 {}", db.display());
}

/// The newest item of feed-db.sql, 2024-07-02T10:00:00Z.
const FEED_DATE: &str = "Tue, 02 Jul 2024 10:00:00 GMT";

#[test]
fn the_sqlite_feed_asks_sqlite3_and_sends_only_newer_items_in_cgi_mode() {
    let Some(feed) = SqliteFeed::new("rules-feed-cgi") else {
        return;
    };
    let front = FrontEnd::cgi(&feed.ex, &feed.ex.join("site.toml"), &feed.path_var);
    let all = ok(&front, "/feed-db.cgi");
    assert_eq!(all.header("Last-Modified"), Some(FEED_DATE));
    assert_eq!(all.text().matches("<item>").count(), 3);
    assert_eq!(feed.probe_runs(), 1);
    let current = front.get("/feed-db.cgi", &[("If-Modified-Since", FEED_DATE)]);
    assert_eq!(current.status, 304);
    assert_eq!(feed.probe_runs(), 2, "CGI mode asks the database each time");

    feed.add_item(1_720_000_000);
    let newer = ok_with(&front, "/feed-db.cgi", &[("If-Modified-Since", FEED_DATE)]);
    assert_eq!(
        newer.header("Last-Modified"),
        Some("Wed, 03 Jul 2024 09:46:40 GMT")
    );
    assert_eq!(
        newer.text().matches("<item>").count(),
        1,
        "{}",
        newer.text()
    );
    assert!(newer.text().contains("Late news"));
    assert_eq!(feed.probe_runs(), 3);

    // explain names the rule that declared it.
    let out = Command::new(bin())
        .arg("explain")
        .arg(feed.ex.join("feed-db.cgi"))
        .arg("--rules")
        .arg(feed.ex.join("site.toml"))
        .env("PATH", &feed.path_var)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("rule 6") && text.contains("site.toml"),
        "{text}"
    );
}

fn ok_with(front: &FrontEnd, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let r = front.get(target, headers);
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r
}

/// With a sidecar adding `probe_ttl` to site.toml's rule, ten concurrent cold requests run
/// sqlite3 once, and so do the repeats within the TTL.
fn the_sqlite_probe_runs_once_per_ttl(feed: &SqliteFeed, front: &FrontEnd) {
    let burst: Vec<HttpResponse> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| front.get("/feed-db.cgi", &[])))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for r in &burst {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Last-Modified"), Some(FEED_DATE));
        assert_eq!(r.header("ETag"), burst[0].header("ETag"));
    }
    for _ in 0..5 {
        let r = front.get("/feed-db.cgi", &[("If-Modified-Since", FEED_DATE)]);
        assert_eq!(r.status, 304);
    }
    assert_eq!(feed.probe_runs(), 1, "one sqlite3 run for fifteen requests");
}

#[test]
fn the_sqlite_probe_runs_once_per_ttl_in_serve() {
    let Some(feed) = SqliteFeed::new("rules-feed-serve") else {
        return;
    };
    feed.dir
        .sidecar("examples/feed-db.cgi", r#"{"probe_ttl": 600}"#);
    let front = FrontEnd::serve(
        &feed.dir,
        &feed.ex,
        &feed.ex.join("site.toml"),
        &feed.path_var,
    );
    the_sqlite_probe_runs_once_per_ttl(&feed, &front);
}

#[test]
fn the_sqlite_probe_runs_once_per_ttl_behind_nginx() {
    let Some(feed) = SqliteFeed::new("rules-feed-nginx") else {
        return;
    };
    feed.dir
        .sidecar("examples/feed-db.cgi", r#"{"probe_ttl": 600}"#);
    let Some(front) = FrontEnd::nginx(
        &feed.dir,
        &feed.ex,
        &feed.ex.join("site.toml"),
        &feed.path_var,
    ) else {
        return;
    };
    the_sqlite_probe_runs_once_per_ttl(&feed, &front);
}

/// Every rules file the README's "Site rules" section shows (the reference and the gitweb and
/// DokuWiki recipes) passes `check`, so the documentation cannot drift from the format.
#[test]
fn the_readmes_rules_files_pass_check() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme.find("## Site rules").expect("a Site rules section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    // Indented blocks: runs of lines starting with four spaces (or empty inside a block).
    let mut blocks: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in section.lines() {
        if let Some(code) = line.strip_prefix("    ") {
            current.push_str(code);
            current.push('\n');
        } else if line.is_empty() && !current.is_empty() {
            current.push('\n');
        } else if !current.is_empty() {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks.push(current);
    let files: Vec<&String> = blocks.iter().filter(|b| b.contains("[[rule]]")).collect();
    assert!(files.len() >= 3, "the reference and two recipes: {files:?}");
    let dir = TempDir::new("rules-readme");
    for (i, text) in files.iter().enumerate() {
        let file = dir.write(&format!("readme-{i}.toml"), text.as_str(), false);
        let out = Command::new(bin())
            .arg("check")
            .arg(&file)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
