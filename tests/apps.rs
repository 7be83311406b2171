//! Real legacy apps nobody here wrote, from Debian's packages, behind every front end: gitweb
//! (Perl CGI) behind Apache `Action`, a shebang and mod_proxy_fcgi, and behind nginx with the
//! FastCGI responder; DokuWiki (PHP) through `Action` and behind nginx.
//!
//! Each page is compared byte for byte with the same server running the app bare (mod_cgid),
//! the app's runs are counted (it logs each start to a file), and its data changes through
//! the app's own means (a git push, the wiki's edit form). Under `CI=true` a missing server or
//! package fails; elsewhere these tests are skipped.

mod apache_support;
mod common;
mod fastcgi_support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_support::{Apache, Listen, Mpm, Req, Resp, Responder, id_of, server_user};
use common::{Spawned, TempDir};
use fastcgi_support::nginx::Nginx;

/// Debian's gitweb package.
const GITWEB: &str = "/usr/share/gitweb";
/// The site both servers answer as, so gitweb's absolute links agree.
const SITE_HOST: &str = "git.example.test";
/// The installed apps' mtime: an old, known second.
const SCRIPT_MTIME: u64 = 1_600_000_000;
/// Snippets of the Apache that serves gitweb through every Apache front end at once.
const SNIPPETS: [&str; 3] = ["action-cgi.conf", "shebang.conf", "fastcgi.conf"];

/// A package's file, or `None` (a skip; a failure under CI=true) when it is not installed.
fn require_package_file(path: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is required under CI=true (scripts/test.sh installs it)",
            path.display()
        );
    }
    eprintln!("SKIPPED: {} is not installed", path.display());
    None
}

/// A git repository served by gitweb, a working copy that pushes to it, gitweb's config, and
/// the file gitweb appends a line to each time it starts.
struct GitSite {
    dir: TempDir,
    commits: usize,
}

impl GitSite {
    fn new() -> Option<GitSite> {
        common::require("git")?;
        require_package_file(GITWEB)?;
        let dir = TempDir::new("gitweb");
        let site = GitSite { dir, commits: 0 };
        // The server's user reads the repository and appends to the run log.
        std::fs::set_permissions(&site.dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        site.git(&["init", "-q", "-b", "master", &site.path("work")]);
        site.git(&[
            "init",
            "-q",
            "--bare",
            "-b",
            "master",
            &site.path("repos/proj.git"),
        ]);
        std::fs::write(
            site.dir.join("repos/proj.git/description"),
            "A project behind http-conditional\n",
        )
        .unwrap();
        let runs = site.dir.write("runs", "", false);
        std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o666)).unwrap();
        // gitweb runs git as the server's user on a repository the tests own:
        // safe.directory from the command-line config, which git honours for that check.
        site.dir.write(
            "gitweb.conf",
            format!(
                "our $projectroot = \"{repos}\";\n\
                 our $projects_list = $projectroot;\n\
                 $ENV{{GIT_CONFIG_COUNT}} = 1;\n\
                 $ENV{{GIT_CONFIG_KEY_0}} = 'safe.directory';\n\
                 $ENV{{GIT_CONFIG_VALUE_0}} = '*';\n\
                 if (open(my $runs, '>>', '{runs}')) {{ print $runs \"run $<\\n\"; close $runs; }}\n\
                 1;\n",
                repos = site.path("repos"),
                runs = runs.display()
            ),
            false,
        );
        let mut site = site;
        site.commit("first commit");
        Some(site)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// Runs git with a fixed identity and no user or system config.
    fn git(&self, args: &[&str]) {
        self.git_at(args, "2020-01-01T12:00:00Z");
    }

    /// Runs git as [`GitSite::git`] does, with `date` as the author's and committer's date.
    fn git_at(&self, args: &[&str], date: &str) {
        let out = Command::new("git")
            .args(args)
            .env_clear()
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.dir.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.test")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.test")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Commits a change in the working copy and pushes it: what a developer does. Commit
    /// dates are fixed in the past, so gitweb's "N years ago" reads the same on every server.
    fn commit(&mut self, subject: &str) {
        self.commits += 1;
        let n = self.commits;
        let work = self.path("work");
        std::fs::write(self.dir.join("work/file.txt"), format!("change {n}\n")).unwrap();
        let date = format!("2020-01-{n:02}T12:00:00Z");
        self.git(&["-C", &work, "add", "file.txt"]);
        self.git_at(&["-C", &work, "commit", "-q", "-m", subject], &date);
        let bare = self.path("repos/proj.git");
        self.git(&["-C", &work, "push", "-q", &bare, "master"]);
    }

    fn runs(&self) -> usize {
        self.run_uids().len()
    }

    /// The user id of each gitweb run so far.
    fn run_uids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("run ")?.parse().ok())
            .collect()
    }

    /// Gives every file under the repository the mtime `second` + `nanos`: two changes made
    /// within the same second, whatever the machine's speed.
    fn set_repository_time(&self, second: u64, nanos: u32) {
        let time = UNIX_EPOCH + Duration::new(second, nanos);
        set_tree_mtime(&self.dir.join("repos"), time);
    }

    /// The sidecar that declares gitweb: the repositories are what its pages depend on.
    fn sidecar(&self) -> String {
        format!("{{\"depends_on\": [\"{}/\"]}}", self.path("repos"))
    }
}

fn set_tree_mtime(path: &Path, time: SystemTime) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            set_tree_mtime(&entry.unwrap().path(), time);
        }
    }
    if !meta.file_type().is_symlink() {
        std::fs::File::open(path)
            .and_then(|f| f.set_modified(time))
            .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
    }
}

/// Copies Debian's gitweb.cgi (and its static files) to `folder`, with `first_line` in place
/// of its shebang when given.
fn install_gitweb(folder: &Path, first_line: Option<&str>) {
    std::fs::create_dir_all(folder).unwrap();
    let mut script = std::fs::read_to_string(Path::new(GITWEB).join("gitweb.cgi")).unwrap();
    if let Some(line) = first_line {
        let rest = script
            .split_once('\n')
            .map_or("", |(_, rest)| rest)
            .to_string();
        script = format!("{line}\n{rest}");
    }
    let target = folder.join("gitweb.cgi");
    std::fs::write(&target, script).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Older than any repository change, so the repository's time is what the tags follow.
    common::set_mtime(&target, SCRIPT_MTIME);
    common::copy_dir(&Path::new(GITWEB).join("static"), &folder.join("static"));
}

/// One Apache serving gitweb at the same URLs two ways: on its main port through each
/// front end under test (`/legacy/` Action, `/scripts/` shebang, `/fcgi/` mod_proxy_fcgi),
/// and on a second port bare, mod_cgid running gitweb.cgi itself.
struct GitwebApache {
    apache: Apache,
    bare_port: u16,
    _responder: Responder,
}

impl GitwebApache {
    fn start(site: &GitSite) -> Option<GitwebApache> {
        let bare_port = common::free_port();
        let config = site.path("gitweb.conf");
        // SetEnv on the pages' folders: under Action, Apache renames it REDIRECT_GITWEB_CONFIG.
        let extra = format!(
            "<Directory \"{{root}}/legacy\">\n    SetEnv GITWEB_CONFIG {config}\n</Directory>\n\
             <Directory \"{{root}}/scripts\">\n    SetEnv GITWEB_CONFIG {config}\n</Directory>\n\
             <Directory \"{{root}}/fcgi\">\n    SetEnv GITWEB_CONFIG {config}\n</Directory>\n\
             Listen 127.0.0.1:{bare_port}\n\
             <VirtualHost 127.0.0.1:{bare_port}>\n\
                 Alias /legacy/ \"{{root}}/bare/\"\n\
                 Alias /scripts/ \"{{root}}/bare/\"\n\
                 Alias /fcgi/ \"{{root}}/bare/\"\n\
             </VirtualHost>\n\
             <Directory \"{{root}}/bare\">\n\
                 Options +ExecCGI\n\
                 <Files \"gitweb.cgi\">\n        SetHandler cgi-script\n    </Files>\n\
                 SetEnv GITWEB_CONFIG {config}\n\
                 Require all granted\n\
             </Directory>\n"
        );
        let apache = Apache::start("gitweb", Mpm::EventCgid, &SNIPPETS, &extra)?;
        let wrapper = apache.wrapper.display().to_string();
        install_gitweb(&apache.path("bare"), None);
        install_gitweb(&apache.path("legacy"), None);
        install_gitweb(
            &apache.path("scripts"),
            Some(&format!("#!{wrapper} /usr/bin/perl")),
        );
        install_gitweb(&apache.path("fcgi"), None);
        for folder in ["legacy", "scripts", "fcgi"] {
            apache.write(
                &format!("{folder}/gitweb.cgi.conditional.json"),
                site.sidecar(),
                false,
            );
        }
        let responder = Responder::start(&apache, Listen::Path);
        Some(GitwebApache {
            apache,
            bare_port,
            _responder: responder,
        })
    }

    fn request(path: &str) -> Req {
        Req::new("GET", path).header("Host", SITE_HOST)
    }

    /// The page through the front end under test.
    fn get(&self, path: &str) -> Resp {
        self.apache.send(&Self::request(path))
    }

    fn get_if_none_match(&self, path: &str, etag: &str) -> Resp {
        self.apache
            .send(&Self::request(path).header("If-None-Match", etag))
    }

    /// The same URL served by mod_cgid running gitweb itself.
    fn bare(&self, path: &str) -> Resp {
        Self::request(path).send(self.bare_port)
    }
}

/// Pages of every kind gitweb builds links for: the project list, a project by PATH_INFO
/// and by query, and views below a project (cgit and gitweb both put them in PATH_INFO).
const GITWEB_PAGES: [&str; 5] = [
    "gitweb.cgi",
    "gitweb.cgi/proj.git",
    "gitweb.cgi/proj.git/shortlog",
    "gitweb.cgi?p=proj.git;a=log",
    "gitweb.cgi/proj.git/tree/HEAD",
];

/// gitweb through a front end gives the page mod_cgid gives, byte for byte; its relative
/// links (static files, other views) work; a repeat is a 304 without gitweb starting.
fn gitweb_is_the_bare_page_and_304_without_running(
    apache: &GitwebApache,
    site: &GitSite,
    prefix: &str,
) {
    for page in GITWEB_PAGES {
        let url = format!("{prefix}{page}");
        let wrapped = apache.get(&url);
        let bare = apache.bare(&url);
        assert_eq!(bare.status, 200, "bare {url}: {}", bare.text());
        assert_eq!(
            wrapped.status,
            200,
            "{url}: {}\n{}",
            wrapped.text(),
            apache.apache.error_log()
        );
        assert!(
            wrapped.text().contains("proj.git"),
            "{url} shows no project (GITWEB_CONFIG lost?): {}",
            wrapped.text()
        );
        assert_same_page(&url, &wrapped, &bare);
        let runs = site.runs();
        let again = apache.get_if_none_match(&url, &wrapped.etag());
        assert_eq!(again.status, 304, "{url}: {again:?}");
        assert!(again.body.is_empty());
        assert_eq!(site.runs(), runs, "{url}: gitweb ran for a 304");
    }
    let css = apache.get(&format!("{prefix}static/gitweb.css"));
    assert_eq!(css.status, 200, "{prefix}static/gitweb.css");
    assert!(css.text().contains("body"), "{}", css.text());
}

/// The page through the wrapper is the bare server's, byte for byte; else the first line that
/// differs.
fn assert_same_page(url: &str, wrapped: &Resp, bare: &Resp) {
    if wrapped.body == bare.body {
        return;
    }
    let (ours, theirs) = (wrapped.text(), bare.text());
    let differs = ours
        .lines()
        .zip(theirs.lines())
        .find(|(a, b)| a != b)
        .map_or_else(
            || "(one is a prefix of the other)".to_string(),
            |(a, b)| format!("wrapped: {a}\nbare:    {b}"),
        );
    panic!("{url}: the page differs from the bare server's\n{differs}");
}

/// PATH_INFO is in the ETag: the project list and two views of one project differ.
fn etags_differ_by_path_info(apache: &GitwebApache, prefix: &str) {
    let tags: Vec<String> = [
        "gitweb.cgi",
        "gitweb.cgi/proj.git",
        "gitweb.cgi/proj.git/log",
    ]
    .iter()
    .map(|page| apache.get(&format!("{prefix}{page}")).etag())
    .collect();
    assert_ne!(tags[0], tags[1], "{prefix}");
    assert_ne!(tags[1], tags[2], "{prefix}");
}

#[test]
fn gitweb_behind_apache_action_shebang_and_mod_proxy_fcgi() {
    let Some(mut site) = GitSite::new() else {
        return;
    };
    let Some(apache) = GitwebApache::start(&site) else {
        return;
    };
    let fronts = ["/legacy/", "/scripts/", "/fcgi/"];
    for prefix in fronts {
        gitweb_is_the_bare_page_and_304_without_running(&apache, &site, prefix);
        etags_differ_by_path_info(&apache, prefix);
    }
    // Action: the page's own SCRIPT_NAME, so <base href> and links point at the page.
    let summary = apache.get("/legacy/gitweb.cgi/proj.git").text();
    assert!(
        summary.contains(&format!(
            "<base href=\"http://{SITE_HOST}/legacy/gitweb.cgi\""
        )),
        "{summary}"
    );
    assert!(
        summary.contains("href=\"/legacy/gitweb.cgi?p=proj.git;a=shortlog\""),
        "{summary}"
    );
    assert!(!summary.contains("http-conditional-bin"), "{summary}");

    // A push: the old tags no longer match, and the new page shows the new commit.
    let page = "gitweb.cgi/proj.git/shortlog";
    let before: Vec<String> = fronts
        .iter()
        .map(|p| apache.get(&format!("{p}{page}")).etag())
        .collect();
    site.commit("second commit");
    for (prefix, old) in fronts.iter().zip(&before) {
        let url = format!("{prefix}{page}");
        let fresh = apache.get_if_none_match(&url, old);
        assert_eq!(fresh.status, 200, "{url} after a push");
        assert_ne!(&fresh.etag(), old, "{url}");
        assert!(fresh.text().contains("second commit"), "{url}");
        assert_eq!(fresh.body, apache.bare(&url).body, "{url} after a push");
    }

    // Two pushes within one second: a client that fetched between them gets the second.
    // This very second (past by the time the pages are asked for, so never clamped).
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    site.commit("third commit");
    site.set_repository_time(second, 100_000_000);
    let between: Vec<Resp> = fronts
        .iter()
        .map(|p| apache.get(&format!("{p}{page}")))
        .collect();
    site.commit("fourth commit");
    site.set_repository_time(second, 700_000_000);
    for (prefix, seen) in fronts.iter().zip(&between) {
        let url = format!("{prefix}{page}");
        assert!(!seen.text().contains("fourth commit"));
        let later = apache.get_if_none_match(&url, &seen.etag());
        assert_eq!(
            later.status, 200,
            "{url}: a change within the same second was missed"
        );
        assert_eq!(later.header("Last-Modified"), seen.header("Last-Modified"));
        assert!(later.text().contains("fourth commit"), "{url}");
    }
}

/// Who the responder switches to in the privilege checks.
struct Accounts {
    user: String,
    uid: u32,
    gid: u32,
    /// Another group than the user's own, so the socket's group is seen to come from the flag.
    socket_group: String,
    socket_gid: u32,
}

/// The server's user and a second group; `None` when the tests do not run as root.
fn accounts() -> Option<Accounts> {
    let (user, group) = server_user()?;
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let socket_group = ["nogroup", "nobody"]
        .into_iter()
        .find(|g| groups.lines().any(|l| l.starts_with(&format!("{g}:"))))
        .unwrap_or(&group)
        .to_string();
    Some(Accounts {
        uid: id_of("/etc/passwd", &user),
        gid: id_of("/etc/group", &group),
        socket_gid: id_of("/etc/group", &socket_group),
        user,
        socket_group,
    })
}

/// Waits until a unix socket accepts connections.
fn wait_for_socket(path: &Path, what: &str, log: &Path) {
    let start = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            start.elapsed() < fastcgi_support::PATIENCE,
            "{what} did not listen on {}: {}",
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// fcgiwrap: how nginx runs a CGI program bare, for the byte-for-byte comparison.
fn fcgiwrap(socket: &Path, uid: Option<(u32, u32)>, log: &Path) -> Option<Spawned> {
    let program = common::require("fcgiwrap")?;
    let mut cmd = Command::new(program);
    cmd.arg("-s")
        .arg(format!("unix:{}", socket.display()))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .process_group(0);
    if let Some((uid, gid)) = uid {
        cmd.uid(uid).gid(gid);
    }
    let child = Spawned::new(cmd.spawn().expect("start fcgiwrap"));
    wait_for_socket(socket, "fcgiwrap", log);
    Some(child)
}

/// Started as root, the responder refuses to run without --user; with it, its socket and
/// the scripts belong to that user, and the socket to --socket-group. gitweb, linked into
/// the document root from /usr/share/gitweb (a second --root), then behind nginx gives
/// fcgiwrap's page byte for byte, and 304s without starting.
#[test]
fn gitweb_linked_from_its_package_behind_nginx_as_the_given_user() {
    let Some(mut site) = GitSite::new() else {
        return;
    };
    let dir = TempDir::new("gitweb-nginx");
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::os::unix::fs::symlink(Path::new(GITWEB).join("gitweb.cgi"), www.join("gitweb.cgi"))
        .unwrap();
    std::os::unix::fs::symlink(Path::new(GITWEB).join("static"), www.join("static")).unwrap();
    dir.write("www/gitweb.cgi.conditional.json", site.sidecar(), false);
    // Sockets live in a folder the server's user may write to (fcgiwrap binds as that user).
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = run.join("hc.sock");
    let www_arg = www.display().to_string();
    let root_args = ["--root", GITWEB];

    let accounts = accounts();
    let user_args: Vec<String> = match &accounts {
        Some(Accounts {
            user, socket_group, ..
        }) => {
            // As root without --user: a refusal that says what to do, and no socket.
            let refused = Command::new(common::bin())
                .args(["fastcgi", "--root", &www_arg, "--listen"])
                .arg(format!("unix:{}", socket.display()))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success(), "started as root without --user");
            assert!(
                stderr.contains("root") && stderr.contains("--user"),
                "{stderr}"
            );
            assert!(!socket.exists(), "a refused start left a socket");
            vec![
                "--user".into(),
                user.clone(),
                "--socket-group".into(),
                socket_group.clone(),
            ]
        }
        None => {
            eprintln!("not root: the refusal and the switch to --user are not checked");
            Vec::new()
        }
    };
    let mut extra: Vec<&str> = root_args.to_vec();
    extra.extend(user_args.iter().map(String::as_str));
    let responder = fastcgi_support::Responder::start(&www, &socket, &extra);
    if let Some(Accounts {
        uid, socket_gid, ..
    }) = &accounts
    {
        // The socket exists from bind on; the start-up line comes once root is given up.
        let start = std::time::Instant::now();
        while !responder.log_text().contains("FastCGI responder on") {
            assert!(
                start.elapsed() < fastcgi_support::PATIENCE,
                "{}",
                responder.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (*uid, *socket_gid),
            "the socket's owner"
        );
        assert_eq!(meta.mode() & 0o777, 0o660);
        let status = std::fs::read_to_string(format!("/proc/{}/status", responder.pid())).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line
                .split_whitespace()
                .skip(1)
                .all(|id| id == uid.to_string()),
            "the responder kept root: {uid_line}"
        );
    }
    let bare_socket = run.join("fcgiwrap.sock");
    let bare_ids = accounts.as_ref().map(|a| (a.uid, a.gid));
    let Some(_fcgiwrap) = fcgiwrap(&bare_socket, bare_ids, &run.join("fcgiwrap.log")) else {
        return;
    };
    let bare_port = common::free_port();
    let params = dir.join("nginx/snippets/http-conditional-params.conf");
    let config = site.path("gitweb.conf");
    let bare_server = format!(
        "server {{\n\
           listen 127.0.0.1:{bare_port};\n\
           server_name _;\n\
           root {www_arg};\n\
           location ~ ^/gitweb\\.cgi(/|$) {{\n\
             fastcgi_split_path_info ^(/gitweb\\.cgi)(/.*)$;\n\
             fastcgi_pass unix:{bare};\n\
             include {params};\n\
             fastcgi_param GITWEB_CONFIG {config};\n\
           }}\n\
         }}\n",
        bare = bare_socket.display(),
        params = params.display(),
    );
    let Some(nginx) = Nginx::start_with(
        &dir,
        &www,
        &socket,
        "http-conditional-gitweb.conf",
        &[("/etc/gitweb.conf", config.clone())],
        &bare_server,
    ) else {
        return;
    };
    let port = nginx.addr.port();
    let get = |port: u16, url: &str, etag: Option<&str>| {
        let mut req = Req::new("GET", url).header("Host", SITE_HOST);
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        req.send(port)
    };
    for page in GITWEB_PAGES {
        let url = format!("/{page}");
        let wrapped = get(port, &url, None);
        let bare = get(bare_port, &url, None);
        assert_eq!(bare.status, 200, "fcgiwrap {url}: {}", bare.text());
        assert_eq!(
            wrapped.status,
            200,
            "{url}: {}\n{}",
            wrapped.text(),
            responder.log_text()
        );
        assert!(
            wrapped.text().contains("proj.git"),
            "{url}: {}",
            wrapped.text()
        );
        assert_same_page(&url, &wrapped, &bare);
        let runs = site.runs();
        let again = get(port, &url, Some(&wrapped.etag()));
        assert_eq!(again.status, 304, "{url}");
        assert_eq!(site.runs(), runs, "{url}: gitweb ran for a 304");
    }
    assert_eq!(get(port, "/static/gitweb.css", None).status, 200);

    let url = "/gitweb.cgi/proj.git/shortlog";
    let old = get(port, url, None).etag();
    site.commit("pushed behind nginx");
    let fresh = get(port, url, Some(&old));
    assert_eq!(fresh.status, 200);
    assert!(fresh.text().contains("pushed behind nginx"));
    assert_eq!(fresh.body, get(bare_port, url, None).body);

    if let Some(Accounts { user, uid, .. }) = &accounts {
        let uids = site.run_uids();
        assert!(!uids.is_empty());
        assert!(
            uids.iter().all(|u| u == uid),
            "gitweb ran as {uids:?}, not {user}"
        );
    }
}

/// Debian's DokuWiki package.
const DOKUWIKI: &str = "/usr/share/dokuwiki";
/// The wiki user the tests log in as, and the password.
const WIKI_USER: &str = "alice";
const WIKI_PASSWORD: &str = "correct horse";
/// The page the tests read and edit (it ships with the package).
const WIKI_PAGE: &str = "doku.php?id=playground:playground";

/// A DokuWiki of the tests' own: the package's code copied, its config and data copied into
/// the temp folder (the system's /etc/dokuwiki and /var/lib/dokuwiki are only read), PHP
/// sessions in a temp folder, and a log line per start.
struct Wiki {
    dir: TempDir,
}

impl Wiki {
    fn new() -> Option<Wiki> {
        require_package_file(DOKUWIKI)?;
        common::require("php-cgi")?;
        let dir = TempDir::new("dokuwiki");
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wiki = Wiki { dir };
        copy_resolved(Path::new("/etc/dokuwiki"), &wiki.dir.join("conf"));
        copy_resolved(Path::new("/var/lib/dokuwiki/data"), &wiki.dir.join("data"));
        std::fs::create_dir_all(wiki.dir.join("sessions")).unwrap();
        wiki.dir.write("runs", "", false);
        wiki.dir.write(
            "conf/local.php",
            format!(
                "<?php\n$conf['title'] = 'Test wiki';\n$conf['useacl'] = 1;\n\
                 $conf['superuser'] = '@admin';\n$conf['savedir'] = '{}';\n",
                wiki.path("data")
            ),
            false,
        );
        let hash = md5_hex(WIKI_PASSWORD.as_bytes());
        wiki.dir.write(
            "conf/users.auth.php",
            format!("{WIKI_USER}:{hash}:Alice:alice@example.test:user\n"),
            false,
        );
        wiki.dir
            .write("conf/acl.auth.php", "*\t@ALL\t1\n*\t@user\t8\n", false);
        // The wiki's files belong to the user PHP runs as, as the package arranges.
        if let Some((user, group)) = server_user() {
            let (uid, gid) = (id_of("/etc/passwd", &user), id_of("/etc/group", &group));
            for sub in ["data", "sessions", "runs", "conf"] {
                chown_tree(&wiki.dir.join(sub), uid, gid);
            }
        }
        Some(wiki)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// Copies the package's code to `folder`, with a preload.php that points it at this
    /// wiki's config, its PHP sessions here, and logs each start.
    fn install(&self, folder: &Path) {
        copy_resolved(Path::new(DOKUWIKI), folder);
        std::fs::write(
            folder.join("inc/preload.php"),
            format!(
                "<?php\nif (!defined('DOKU_CONF')) {{\n\
                   define('DOKU_MAIN_CONF', '{conf}/');\n\
                   define('DOKU_CONF', '{conf}/');\n\
                   ini_set('session.save_path', '{sessions}');\n\
                   file_put_contents('{runs}', \"run\\n\", FILE_APPEND);\n\
                 }}\n",
                conf = self.path("conf"),
                sessions = self.path("sessions"),
                runs = self.path("runs"),
            ),
        )
        .unwrap();
    }

    /// The sidecar for doku.php: the pages and config it renders from, and the session in
    /// two cookies (DokuWiki's session, and DW<hash> that keeps a login).
    fn sidecar(&self) -> String {
        format!(
            "{{\"depends_on\": [\"{pages}/\", \"{conf}/\"],\n \
              \"session\": {{\"cookie\": \"DokuWiki\", \"save_path\": \"{sessions}\", \"cookies\": [\"DW*\"]}}}}",
            pages = self.path("data/pages"),
            conf = self.path("conf"),
            sessions = self.path("sessions"),
        )
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// Copies a tree, following symlinks (the package links parts of itself to /var/lib and /etc).
fn copy_resolved(from: &Path, to: &Path) {
    assert!(
        !to.exists(),
        "{} exists: cp would copy into it",
        to.display()
    );
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-rL")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -rL {} {}",
        from.display(),
        to.display()
    );
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A browser's cookies for one site.
#[derive(Default, Clone)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, resp: &Resp) {
        for (name, value) in &resp.headers {
            if !name.eq_ignore_ascii_case("Set-Cookie") {
                continue;
            }
            let pair = value.split(';').next().unwrap_or_default();
            let Some((cookie, val)) = pair.split_once('=') else {
                continue;
            };
            self.0.retain(|(n, _)| n != cookie);
            if val != "deleted" && !val.is_empty() {
                self.0.push((cookie.to_string(), val.to_string()));
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn without(&self, name: &str) -> Jar {
        Jar(self.0.iter().filter(|(n, _)| n != name).cloned().collect())
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// The value of a hidden form field.
fn form_field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let tag_start = html[..at].rfind('<').unwrap();
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>').unwrap()];
    let value = tag.split("value=\"").nth(1).unwrap_or("\"");
    value[..value.find('"').unwrap()].replace("&amp;", "&")
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// DokuWiki puts the time into each page (its task runner's URL): the one part of a page
/// that differs from run to run, whatever serves it.
fn without_task_runner_time(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut rest = &text[..];
    while let Some(at) = rest.find("taskrunner.php?") {
        let end = at + rest[at..].find('"').unwrap_or(rest.len() - at);
        let url = &rest[at..end];
        out.push_str(&rest[..at]);
        out.push_str(url.rsplit_once('&').map_or(url, |(keep, _)| keep));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One site's requests, as a browser sends them (Host fixed, cookies from the jar).
struct Browser<'a> {
    send: &'a dyn Fn(Req) -> Resp,
    prefix: &'a str,
}

impl Browser<'_> {
    fn get(&self, page: &str, jar: &Jar, etag: Option<&str>) -> Resp {
        let mut req = Req::new("GET", &format!("{}{page}", self.prefix)).header("Host", SITE_HOST);
        if !jar.0.is_empty() {
            req = req.header("Cookie", &jar.header());
        }
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        (self.send)(req)
    }

    fn post(&self, jar: &Jar, fields: &[(&str, &str)]) -> Resp {
        let req = Req::new("POST", &format!("{}doku.php", self.prefix))
            .header("Host", SITE_HOST)
            .header("Cookie", &jar.header())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_encode(fields));
        (self.send)(req)
    }
}

/// Every Vary header's tokens, lower-cased (nginx's gzip_vary adds a header of its own).
fn vary(resp: &Resp) -> String {
    resp.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Vary"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a visitor, a user who logs in and edits, and a shared cache see of one wiki page.
fn dokuwiki_sessions_and_edits(wiki: &Wiki, browser: &Browser<'_>) {
    let anonymous = browser.get(WIKI_PAGE, &Jar::default(), None);
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    assert!(anonymous.text().contains("Log In"), "{}", anonymous.text());
    assert!(
        vary(&anonymous).contains("cookie"),
        "session mode without Vary: Cookie: {:?}",
        anonymous.headers
    );
    let anonymous_tag = anonymous.etag();
    let runs = wiki.runs();
    let again = browser.get(WIKI_PAGE, &Jar::default(), Some(&anonymous_tag));
    assert_eq!(again.status, 304);
    assert!(
        vary(&again).contains("cookie"),
        "a 304 carries the 200's Vary"
    );
    assert_eq!(wiki.runs(), runs, "DokuWiki ran for a 304");

    // Logging in through the wiki's own form.
    let mut jar = Jar::default();
    let form = browser.get(&format!("{WIKI_PAGE}&do=login"), &jar, None);
    jar.take(&form);
    let sectok = form_field(&form.text(), "sectok");
    let login = browser.post(
        &jar,
        &[
            ("id", "playground:playground"),
            ("do", "login"),
            ("sectok", &sectok),
            ("u", WIKI_USER),
            ("p", WIKI_PASSWORD),
            ("r", "1"),
        ],
    );
    jar.take(&login);
    assert!(
        jar.names()
            .iter()
            .any(|n| n.starts_with("DW") && *n != "DokuWiki"),
        "no remember-me cookie after the login: {:?} {:?}",
        jar.names(),
        login.headers
    );

    // The logged-in user, showing the anonymous copy's tag, gets their own page; so does
    // one whose session cookie is gone but whose login is kept in the DW cookie.
    let session_cookie_gone = jar.without("DokuWiki");
    for (label, cookies) in [("with", &jar), ("without", &session_cookie_gone)] {
        let mine = browser.get(WIKI_PAGE, cookies, Some(&anonymous_tag));
        assert_eq!(
            mine.status, 200,
            "logged in {label} the session cookie: the anonymous copy's tag matched"
        );
        assert_ne!(mine.etag(), anonymous_tag, "{label} the session cookie");
        assert!(mine.text().contains("Log Out"), "{label}: {}", mine.text());
        assert!(
            mine.header("Cache-Control")
                .unwrap_or_default()
                .contains("private")
        );
    }

    // An edit through the wiki's form: every visitor's old copy is stale.
    let edit = browser.get(&format!("{WIKI_PAGE}&do=edit"), &jar, None);
    let html = edit.text();
    let text = "====== Playground ======\nEdited through the wiki's form.\n";
    let saved = browser.post(
        &jar,
        &[
            ("id", "playground:playground"),
            ("sectok", &form_field(&html, "sectok")),
            ("date", &form_field(&html, "date")),
            ("prefix", ""),
            ("suffix", ""),
            ("changecheck", &form_field(&html, "changecheck")),
            ("target", "section"),
            ("wikitext", text),
            ("summary", "test edit"),
            ("do[save]", "1"),
        ],
    );
    assert!(
        saved.status == 302 || saved.status == 303 || saved.status == 200,
        "saving: {saved:?}"
    );
    let fresh = browser.get(WIKI_PAGE, &Jar::default(), Some(&anonymous_tag));
    assert_eq!(
        fresh.status, 200,
        "an edited page still matched the old tag"
    );
    assert_ne!(fresh.etag(), anonymous_tag);
    assert!(
        fresh.text().contains("Edited through the wiki"),
        "{}",
        fresh.text()
    );
}

#[test]
fn dokuwiki_under_php_cgi_through_apache_action() {
    let Some(wiki) = Wiki::new() else {
        return;
    };
    let bare_port = common::free_port();
    let extra = format!(
        "Listen 127.0.0.1:{bare_port}\n\
         <VirtualHost 127.0.0.1:{bare_port}>\n\
             Alias /php/ \"{{root}}/bare-php/\"\n\
         </VirtualHost>\n\
         ScriptAlias /bare-php-bin/ /usr/lib/cgi-bin/\n\
         <Directory \"/usr/lib/cgi-bin\">\n    Options +ExecCGI\n    Require all granted\n</Directory>\n\
         Action bare-php /bare-php-bin/php8.2\n\
         <Directory \"{{root}}/bare-php\">\n\
             <FilesMatch \"\\.php$\">\n        SetHandler bare-php\n    </FilesMatch>\n\
             Require all granted\n\
         </Directory>\n"
    );
    let Some(apache) = Apache::start("dokuwiki", Mpm::EventCgid, &["action-php.conf"], &extra)
    else {
        return;
    };
    wiki.install(&apache.path("php/wiki"));
    wiki.install(&apache.path("bare-php/wiki"));
    apache.write("php/wiki/doku.php.conditional.json", wiki.sidecar(), false);

    let anonymous = |port: u16| {
        Req::new("GET", &format!("/php/wiki/{WIKI_PAGE}"))
            .header("Host", SITE_HOST)
            .send(port)
    };
    let wrapped = anonymous(apache.port);
    let bare = anonymous(bare_port);
    assert_eq!(bare.status, 200, "bare php-cgi: {}", bare.text());
    assert_eq!(
        wrapped.status,
        200,
        "{}\n{}",
        wrapped.text(),
        apache.error_log()
    );
    assert_eq!(
        without_task_runner_time(&wrapped.body),
        without_task_runner_time(&bare.body),
        "DokuWiki through the wrapper differs from php-cgi bare"
    );
    let send = |req: Req| apache.send(&req);
    let browser = Browser {
        send: &send,
        prefix: "/php/wiki/",
    };
    dokuwiki_sessions_and_edits(&wiki, &browser);
}

#[test]
fn dokuwiki_behind_nginx_and_the_responder() {
    let Some(wiki) = Wiki::new() else {
        return;
    };
    let dir = TempDir::new("dokuwiki-nginx");
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = dir.join("www");
    wiki.install(&www.join("wiki"));
    dir.write("www/wiki/doku.php.conditional.json", wiki.sidecar(), false);
    let user: Vec<&str> = match server_user() {
        Some((ref name, _)) if name == "www-data" => vec!["--user", "www-data"],
        Some(_) => vec!["--user", "nobody"],
        None => Vec::new(),
    };
    let responder = fastcgi_support::Responder::start(&www, &dir.join("hc.sock"), &user);
    let Some(nginx) = Nginx::start(&dir, &www, &responder.socket) else {
        return;
    };
    let port = nginx.addr.port();
    let send = |req: Req| req.send(port);
    let browser = Browser {
        send: &send,
        prefix: "/wiki/",
    };
    dokuwiki_sessions_and_edits(&wiki, &browser);
}
