//! Scale-out (contract "Scale-out"): two machines, each nginx (nginx-conf/ as shipped) and its
//! own responder over its own docroot, holding the same files with different mtimes; one nginx
//! `upstream` (nginx-conf/http-conditional-upstream.conf) balancing them round robin; Varnish
//! (varnish-conf/http-conditional.vcl, verbatim but for the port) or Squid in front.

mod common;
mod fastcgi_support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Spawned, TempDir, set_mtime};
use fastcgi_support::http::{self, HttpResponse};
use fastcgi_support::nginx::{Nginx, shipped, substitute};
use fastcgi_support::{PATIENCE, Responder, eventually};

/// The page, byte for byte the same on both machines: it logs each run beside its docroot.
const PAGE: &str = "#!/bin/sh\n\
    echo run >> \"$DOCUMENT_ROOT/../runs.log\"\n\
    printf 'Content-Type: text/plain\\n\\n'\n\
    cat \"$DOCUMENT_ROOT/data/article.txt\"\n";
const SIDECAR: &str = r#"{"etag": "content", "depends_on": ["data/"],
    "cache_seconds": 1, "cache_privacy": "public"}"#;
/// What every machine holds, relative to its docroot (the folder too: its mtime counts).
const FILES: [&str; 4] = [
    "page.cgi",
    "page.cgi.conditional.json",
    "data/article.txt",
    "data",
];

/// One machine: a docroot, its responder, its nginx.
struct Machine {
    dir: TempDir,
    www: PathBuf,
    nginx: Nginx,
    _responder: Responder,
}

impl Machine {
    /// A machine deployed at `deployed` (unix seconds): every file carries that mtime.
    fn start(label: &str, deployed: u64) -> Option<Machine> {
        let dir = TempDir::new(label);
        let www = dir.join("www");
        dir.write("www/page.cgi", PAGE, true);
        dir.write("www/page.cgi.conditional.json", SIDECAR, false);
        dir.write("www/data/article.txt", "first edition\n", false);
        for file in FILES {
            set_mtime(&www.join(file), deployed);
        }
        let socket = dir.join("hc.sock");
        let responder = Responder::start(&www, &socket, &[]);
        let nginx = Nginx::start(&dir, &www, &socket)?;
        Some(Machine {
            dir,
            www,
            nginx,
            _responder: responder,
        })
    }

    fn get(&self, headers: &[(&str, &str)]) -> HttpResponse {
        http::get(self.nginx.addr, "/page.cgi", headers)
    }

    /// Times the page ran on this machine.
    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.join("runs.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// 304s this machine's nginx sent (its access log, nginx's combined format).
    fn not_modified_sent(&self) -> usize {
        std::fs::read_to_string(self.nginx.prefix.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\" 304 "))
            .count()
    }

    /// The same new bytes on this machine, written now (so with this machine's own mtime).
    fn publish(&self, text: &str) {
        std::fs::write(self.www.join("data/article.txt"), text).unwrap();
    }
}

/// Two machines behind one nginx `upstream`, round robin.
struct Cluster {
    machines: [Machine; 2],
    balancer: Nginx,
    _dir: TempDir,
}

impl Cluster {
    fn start(label: &str) -> Option<Cluster> {
        let a = Machine::start(&format!("{label}-a"), 1_700_000_000)?;
        let b = Machine::start(&format!("{label}-b"), 1_720_000_000)?;
        let dir = TempDir::new(&format!("{label}-lb"));
        let mut conf = shipped("http-conditional-upstream.conf");
        for (from, machine) in [("192.0.2.10:80", &a), ("192.0.2.11:80", &b)] {
            conf = substitute(&conf, from, &machine.nginx.addr.to_string());
        }
        let balancer = Nginx::start_server(&dir, &conf, "")?;
        Some(Cluster {
            machines: [a, b],
            balancer,
            _dir: dir,
        })
    }

    fn runs(&self) -> usize {
        self.machines.iter().map(Machine::runs).sum()
    }

    fn not_modified_sent(&self) -> [usize; 2] {
        [
            self.machines[0].not_modified_sent(),
            self.machines[1].not_modified_sent(),
        ]
    }

    /// Sends `count` requests through the cache at `front`, each after the cached copy
    /// expired (max-age=1), waiting each time until a machine has answered its revalidation
    /// with a 304. Returns how many 304s each machine sent.
    fn revalidate_through(&self, front: SocketAddr, count: usize, cache: &str) -> [usize; 2] {
        let before = self.not_modified_sent();
        for round in 1..=count {
            // Past max-age=1 (and Age counts whole seconds): the stored copy is stale.
            std::thread::sleep(Duration::from_millis(2100));
            let reply = http::get(front, "/page.cgi", &[]);
            assert_eq!(reply.status, 200, "{cache}: {}", reply.text());
            assert_eq!(reply.text(), "first edition\n");
            let revalidated = eventually(PATIENCE, || {
                let now = self.not_modified_sent();
                now[0] + now[1] >= before[0] + before[1] + round
            });
            assert!(
                revalidated,
                "{cache} did not revalidate (304s per machine: {:?}); origin logs: {}",
                self.not_modified_sent(),
                self.balancer.error_log()
            );
        }
        let after = self.not_modified_sent();
        [after[0] - before[0], after[1] - before[1]]
    }
}

/// Starts `program args` in its own process group, killed with it when dropped.
fn spawn_group(program: &Path, args: &[&str], log: &Path) -> Spawned {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Spawned::new(child)
}

/// varnishd with the shipped VCL, its backend the balancer.
fn start_varnish(dir: &TempDir, origin: SocketAddr) -> Option<(Spawned, SocketAddr)> {
    let varnishd = common::require("varnishd")?;
    let vcl_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("varnish-conf/http-conditional.vcl"),
    )
    .unwrap();
    let vcl_text = substitute(
        &vcl_text,
        ".port = \"8080\";",
        &format!(".port = \"{}\";", origin.port()),
    );
    let vcl = dir.write("default.vcl", vcl_text, false);
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = addr.to_string();
    let workdir = dir.join("varnish");
    let process = spawn_group(
        &varnishd,
        &[
            "-F",
            "-a",
            &listen,
            "-f",
            &vcl.display().to_string(),
            "-n",
            &workdir.display().to_string(),
            "-s",
            "malloc,32m",
            // No management port: nothing listens beyond the one test address.
            "-T",
            "none",
        ],
        &dir.join("varnishd.log"),
    );
    if !common::wait_for_port(addr, PATIENCE) {
        let log = std::fs::read_to_string(dir.join("varnishd.err")).unwrap_or_default();
        panic!("varnishd did not start: {log}");
    }
    Some((process, addr))
}

/// Squid as an accelerator (reverse proxy) in front of the balancer, memory cache only.
fn start_squid(dir: &TempDir, origin: SocketAddr) -> Option<(Spawned, SocketAddr)> {
    let squid = common::require("squid")?;
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let home = dir.join("squid");
    std::fs::create_dir_all(&home).unwrap();
    let conf = format!(
        "http_port 127.0.0.1:{port} accel defaultsite=localhost no-vhost\n\
         cache_peer 127.0.0.1 parent {origin_port} 0 no-query originserver name=origin\n\
         cache_peer_access origin allow all\n\
         http_access allow all\n\
         cache_mem 16 MB\n\
         pid_filename {home}/squid.pid\n\
         cache_log {home}/cache.log\n\
         access_log {home}/access.log\n\
         coredump_dir {home}\n\
         netdb_filename none\n\
         shutdown_lifetime 0 seconds\n\
         {user}",
        origin_port = origin.port(),
        home = home.display(),
        // Squid refuses to run as root: as root it drops to Debian's `proxy` account, which
        // must own its folder.
        user = if rustix::process::geteuid().is_root() {
            "cache_effective_user proxy\n"
        } else {
            ""
        },
    );
    let conf_path = home.join("squid.conf");
    std::fs::write(&conf_path, conf).unwrap();
    if rustix::process::geteuid().is_root() {
        let status = Command::new("chown")
            .args(["-R", "proxy:proxy"])
            .arg(&home)
            .status()
            .unwrap();
        assert!(status.success(), "chown proxy {}", home.display());
    }
    let process = spawn_group(
        &squid,
        &["-N", "-f", &conf_path.display().to_string()],
        &dir.join("squid-run.log"),
    );
    if !common::wait_for_port(addr, PATIENCE) {
        let log = std::fs::read_to_string(home.join("cache.log")).unwrap_or_default();
        panic!("squid did not start: {log}");
    }
    Some((process, addr))
}

fn etag(reply: &HttpResponse) -> String {
    reply
        .header("ETag")
        .unwrap_or_else(|| panic!("no ETag: {:?}", reply.headers))
        .to_string()
}

#[test]
fn machines_holding_the_same_bytes_give_the_same_etag_and_answer_each_others_tags() {
    let Some(cluster) = Cluster::start("agree") else {
        return;
    };
    let [a, b] = &cluster.machines;
    let (from_a, from_b) = (a.get(&[]), b.get(&[]));
    assert_eq!((from_a.status, from_b.status), (200, 200));
    let tag = etag(&from_a);
    assert_eq!(
        etag(&from_b),
        tag,
        "byte-identical ETags from both machines"
    );
    assert_ne!(
        from_a.header("Last-Modified"),
        from_b.header("Last-Modified"),
        "Last-Modified stays time-based"
    );
    assert_eq!(from_a.header("Cache-Control"), Some("public, max-age=1"));

    // A client's tag from one machine is a 304 from the other, without running the page.
    let runs = cluster.runs();
    let reply = b.get(&[("If-None-Match", &tag)]);
    assert_eq!(reply.status, 304, "{}", reply.text());
    assert!(reply.body.is_empty());
    assert_eq!(etag(&reply), tag);
    // With both headers, If-None-Match decides (RFC 9110 §13.2.2): A's older Last-Modified
    // is "modified since" on B, yet the matching tag gives 304.
    let a_date = from_a.header("Last-Modified").unwrap();
    let reply = b.get(&[("If-None-Match", &tag), ("If-Modified-Since", a_date)]);
    assert_eq!(reply.status, 304);
    assert_eq!(cluster.runs(), runs, "no script ran for a 304");

    // `touch` alone changes nothing but Last-Modified.
    for file in FILES {
        set_mtime(&a.www.join(file), 1_710_000_000);
    }
    let touched = a.get(&[("If-None-Match", &tag)]);
    assert_eq!(touched.status, 304);
    assert_eq!(etag(&touched), tag);
    assert_eq!(cluster.runs(), runs);

    // The same change published on both machines: one new ETag on both.
    a.publish("second edition\n");
    b.publish("second edition\n");
    let (new_a, new_b) = (a.get(&[("If-None-Match", &tag)]), b.get(&[]));
    assert_eq!((new_a.status, new_b.status), (200, 200));
    assert_eq!(new_a.text(), "second edition\n");
    assert_ne!(etag(&new_a), tag);
    assert_eq!(etag(&new_a), etag(&new_b), "one new ETag on both machines");
    let through_balancer = http::get(cluster.balancer.addr, "/page.cgi", &[]);
    assert_eq!(etag(&through_balancer), etag(&new_a));
}

#[test]
fn varnish_revalidates_an_expired_copy_with_a_304_from_either_machine_and_no_script_run() {
    let Some(cluster) = Cluster::start("varnish") else {
        return;
    };
    let dir = TempDir::new("varnish-front");
    let Some((_varnish, front)) = start_varnish(&dir, cluster.balancer.addr) else {
        return;
    };
    let first = http::get(front, "/page.cgi", &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(cluster.runs(), 1, "the first request ran the page once");
    // A fresh copy is Varnish's to answer: the origin sees nothing.
    let again = http::get(front, "/page.cgi", &[("If-None-Match", &etag(&first))]);
    assert_eq!(again.status, 304);

    let per_machine = cluster.revalidate_through(front, 4, "varnish");
    assert!(
        per_machine[0] > 0 && per_machine[1] > 0,
        "both machines answered revalidations with 304: {per_machine:?}"
    );
    assert_eq!(cluster.runs(), 1, "no revalidation ran the page");
}

#[test]
fn varnish_passes_private_and_per_cookie_answers_through() {
    let Some(cluster) = Cluster::start("varnish-pass") else {
        return;
    };
    let dir = TempDir::new("varnish-pass-front");
    let Some((_varnish, front)) = start_varnish(&dir, cluster.balancer.addr) else {
        return;
    };
    let cases = [
        (
            r#"{"etag": "content", "cache_seconds": 60, "cache_privacy": "private"}"#,
            "private, max-age=60",
        ),
        (
            r#"{"etag": "content", "cache_seconds": 60, "cache_privacy": "public", "session": true}"#,
            "public, max-age=60",
        ),
    ];
    for (sidecar, policy) in cases {
        for machine in &cluster.machines {
            machine
                .dir
                .write("www/page.cgi.conditional.json", sidecar, false);
        }
        let runs = cluster.runs();
        for _ in 0..3 {
            let reply = http::get(front, "/page.cgi", &[]);
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("Cache-Control"), Some(policy));
        }
        assert_eq!(
            cluster.runs(),
            runs + 3,
            "{policy}: never served from the cache"
        );
    }
}

#[test]
fn squid_revalidates_an_expired_copy_with_a_304_and_no_script_run() {
    let Some(cluster) = Cluster::start("squid") else {
        return;
    };
    let dir = TempDir::new("squid-front");
    let Some((_squid, front)) = start_squid(&dir, cluster.balancer.addr) else {
        return;
    };
    let first = http::get(front, "/page.cgi", &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(cluster.runs(), 1);
    let per_machine = cluster.revalidate_through(front, 2, "squid");
    assert_eq!(per_machine[0] + per_machine[1], 2, "{per_machine:?}");
    assert_eq!(cluster.runs(), 1, "no revalidation ran the page");
}
