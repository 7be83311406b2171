//! `http-conditional check FILE` through the built binary: valid rules files and sidecars
//! exit 0; broken ones exit non-zero naming file, line and column; nothing makes it hang.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TempDir, bin, wait_with_timeout};

/// Exit status, stdout and stderr of `check FILE`; a hang fails the test.
fn check(file: &Path) -> (bool, String, String) {
    let child = Command::new(bin())
        .arg("check")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start http-conditional");
    let out = wait_with_timeout(child, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `check` on a file that must be refused, and returns its stderr.
fn refused(file: &Path) -> String {
    let (ok, _, stderr) = check(file);
    assert!(!ok, "{} was accepted", file.display());
    stderr
}

#[test]
fn the_bundled_site_rules_and_sidecars_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (ok, stdout, stderr) = check(&examples.join("site.toml"));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (6 rules)"), "{stdout}");
    for sidecar in [
        "article.cgi",
        "feed.cgi",
        "label.cgi",
        "news.php",
        "session.php",
    ] {
        let (ok, stdout, stderr) = check(&examples.join(format!("{sidecar}.conditional.json")));
        assert!(ok && stdout.contains("ok (sidecar)"), "{sidecar}: {stderr}");
    }
}

#[test]
fn an_unknown_field_is_reported_with_its_line_and_column() {
    let dir = TempDir::new("check");
    let file = dir.write(
        "site.toml",
        "[[rule]]\nmatch = \"*.cgi\"\ncache_second = 5\n",
        false,
    );
    let stderr = refused(&file);
    assert!(
        stderr.contains("site.toml:3:1: unknown field `cache_second`"),
        "{stderr}"
    );
    let sidecar = dir.write(
        "page.cgi.conditional.json",
        "{\n  \"cache_second\": 5\n}\n",
        false,
    );
    let stderr = refused(&sidecar);
    assert!(stderr.contains("page.cgi.conditional.json:2:"), "{stderr}");
    assert!(stderr.contains("unknown field `cache_second`"), "{stderr}");
}

#[test]
fn each_bad_glob_is_reported_with_its_line_and_column() {
    let dir = TempDir::new("check");
    let file = dir.write(
        "site.toml",
        "[[rule]]\nmatch = \"/srv/[a\"\n[[rule]]\nmatch = \"/srv/*.php\"\n[[rule]]\nmatch = \"/srv/{x\"\n",
        false,
    );
    let stderr = refused(&file);
    assert!(stderr.contains("site.toml:2:9: bad glob"), "{stderr}");
    assert!(stderr.contains("site.toml:6:9: bad glob"), "{stderr}");
}

#[test]
fn a_file_that_is_not_toml_is_refused_with_a_position() {
    let dir = TempDir::new("check");
    let file = dir.write("site.toml", "[[rule]\nmatch = \"x\"\n", false);
    let stderr = refused(&file);
    assert!(stderr.contains("site.toml:1:"), "{stderr}");
    assert!(stderr.contains("not TOML"), "{stderr}");
    let json = dir.write("x.conditional.json", "{\"probe\": tru}", false);
    assert!(refused(&json).contains("x.conditional.json:1:"));
}

#[test]
fn a_file_over_one_mebibyte_is_refused() {
    let dir = TempDir::new("check");
    let file = dir.write("big.toml", vec![b'#'; 2 * 1024 * 1024], false);
    let stderr = refused(&file);
    assert!(stderr.contains("larger than 1048576 bytes"), "{stderr}");
}

#[test]
fn a_fifo_is_refused_without_hanging() {
    let dir = TempDir::new("check");
    for name in ["rules.toml", "page.cgi.conditional.json"] {
        let fifo = dir.join(name);
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        // No writer ever opens it: a blocking open would wait forever.
        let stderr = refused(&fifo);
        assert!(stderr.contains("not a regular file but a FIFO"), "{stderr}");
    }
    let stderr = refused(&dir.join("missing.toml"));
    assert!(stderr.contains("missing.toml"), "{stderr}");
}
