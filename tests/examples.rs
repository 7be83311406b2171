//! The bundled examples, run through the built binary as a web server would run them: sh and
//! python scripts directly, the PHP pages under real php-cgi.

mod common;

use common::{Cgi, TempDir, require, set_mtime};

/// 2024-06-15T09:30:00Z, the `updated` time in examples/news-data.json.
const NEWS_UPDATED: &str = "Sat, 15 Jun 2024 09:30:00 GMT";

#[test]
fn article_has_its_sidecar_date_public_cache_and_gzip() {
    let dir = TempDir::new("ex");
    let ex = dir.examples();
    set_mtime(&ex.join("article.cgi"), 1_700_000_000);
    let r = Cgi::new(&ex.join("article.cgi"))
        .header("ACCEPT_ENCODING", "gzip")
        .run();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Last-Modified"),
        Some("Wed, 01 May 2024 12:00:00 GMT")
    );
    assert_eq!(r.header("Cache-Control"), Some("public, max-age=60"));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    let again = Cgi::new(&ex.join("article.cgi"))
        .header("IF_MODIFIED_SINCE", "Wed, 01 May 2024 12:00:00 GMT")
        .run();
    assert_eq!(again.status, 304);
}

#[test]
fn label_png_follows_its_text_file() {
    require("python3").expect("python3");
    let dir = TempDir::new("ex");
    let ex = dir.examples();
    set_mtime(&ex.join("label.cgi"), 1_700_000_000);
    set_mtime(&ex.join("label.txt"), 1_700_000_100);
    let r = Cgi::new(&ex.join("label.cgi")).run();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("image/png"));
    assert!(r.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(
        r.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:15:00 GMT")
    );
    let cached = Cgi::new(&ex.join("label.cgi"))
        .header("IF_NONE_MATCH", r.header("ETag").unwrap())
        .run();
    assert_eq!(cached.status, 304);
    std::fs::write(ex.join("label.txt"), "NEW TEXT").unwrap();
    set_mtime(&ex.join("label.txt"), 1_700_000_200);
    let changed = Cgi::new(&ex.join("label.cgi"))
        .header("IF_NONE_MATCH", r.header("ETag").unwrap())
        .run();
    assert_eq!(changed.status, 200);
    assert_ne!(changed.body, r.body, "a new label is drawn");
}

#[test]
fn feed_sends_only_items_newer_than_the_clients_copy() {
    require("python3").expect("python3");
    let dir = TempDir::new("ex");
    let ex = dir.examples();
    let feed = ex.join("feed.cgi");
    let all = Cgi::new(&feed).run();
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.text().matches("<item>").count(), 5);
    assert!(all.text().contains("&amp; fresh &lt;markup&gt;"));
    assert!(all.header("Cache-Control").unwrap().starts_with("private"));
    // 2024-06-21T08:00:00Z is item 3's time: two items are newer.
    let newer = Cgi::new(&feed)
        .header("IF_MODIFIED_SINCE", "Fri, 21 Jun 2024 08:00:00 GMT")
        .run();
    assert_eq!(newer.status, 200);
    assert_eq!(newer.text().matches("<item>").count(), 2);
    let last = all.header("Last-Modified").unwrap().to_string();
    let current = Cgi::new(&feed).header("IF_MODIFIED_SINCE", &last).run();
    assert_eq!(current.status, 304);
}

#[test]
fn php_page_probe_under_php_cgi() {
    let Some(php) = require("php-cgi") else {
        return;
    };
    let dir = TempDir::new("ex");
    let ex = dir.examples();
    let news = ex.join("news.php");
    set_mtime(&news, 1_700_000_000);
    let r = Cgi::new(&news).run();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Last-Modified"), Some(NEWS_UPDATED));
    assert!(r.text().contains("<li>Library opening hours extended</li>"));
    let cached = Cgi::new(&news)
        .header("IF_NONE_MATCH", r.header("ETag").unwrap())
        .run();
    assert_eq!(cached.status, 304);

    // A PHP page of our own proves the page itself does not run for a 304.
    let runs = dir.join("php-runs.log");
    let page = dir.write(
        "count.php",
        format!(
            "<?php\nif (getenv('CONDITIONAL_PROBE') === '1') {{ echo \"1700000000\\n\"; exit; }}\nfile_put_contents('{}', \"run\\n\", FILE_APPEND);\necho 'counted page';\n",
            runs.display()
        ),
        false,
    );
    set_mtime(&page, 1_600_000_000);
    dir.sidecar("count.php", r#"{"probe": true}"#);
    let r = Cgi::new(&page).env("CONDITIONAL_INTERPRETER", &php).run();
    assert_eq!((r.status, r.text().as_str()), (200, "counted page"));
    assert_eq!(
        r.header("Last-Modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    let r = Cgi::new(&page)
        .env("CONDITIONAL_INTERPRETER", &php)
        .header("IF_MODIFIED_SINCE", "Tue, 14 Nov 2023 22:13:20 GMT")
        .run();
    assert_eq!(r.status, 304);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
}

#[test]
fn php_session_page_gets_a_new_etag_when_the_session_changes() {
    let Some(_php) = require("php-cgi") else {
        return;
    };
    let dir = TempDir::new("ex");
    let ex = dir.examples();
    let sessions = dir.join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    std::fs::write(
        ex.join("session.php.conditional.json"),
        format!(
            r#"{{"session": {{"cookie": "PHPSESSID", "save_path": "{}"}}, "interpreter": "/usr/bin/php-cgi", "cache_seconds": 0}}"#,
            sessions.display()
        ),
    )
    .unwrap();
    let page = ex.join("session.php");
    let visit = |query: &str, etag: Option<&str>| {
        let mut cgi = Cgi::new(&page)
            .env("CONDITIONAL_SESSION_DIR", &sessions)
            .env("QUERY_STRING", query)
            .header("COOKIE", "PHPSESSID=abc123");
        if let Some(tag) = etag {
            cgi = cgi.header("IF_NONE_MATCH", tag);
        }
        cgi.run()
    };
    let first = visit("visit=1", None);
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().contains("visits: 1"), "{}", first.text());
    assert_eq!(first.header("Vary"), Some("Cookie"));
    let look = visit("", None);
    assert!(look.text().contains("visits: 1"));
    let unchanged = visit("", look.header("ETag"));
    assert_eq!(unchanged.status, 304, "same session, same page");
    let _ = visit("visit=1", None);
    let after = visit("", look.header("ETag"));
    assert_eq!(after.status, 200, "the session changed, so the ETag did");
    assert!(after.text().contains("visits: 2"));
}

/// The original library's RSS case on SQLite, as examples/site.toml declares it: the rule's
/// probe_command asks the database for its newest item, and the feed sends only newer items.
#[test]
fn sqlite_feed_probe_command_answers_the_newest_item_and_the_feed_sends_only_newer_ones() {
    use http_conditional::declaration::merge;
    use http_conditional::rules::Rules;
    require("python3").expect("python3");
    let Some(sqlite3) = require("sqlite3") else {
        return;
    };
    let dir = TempDir::new("ex");
    let ex = dir.examples();
    let sql = std::fs::File::open(ex.join("feed-db.sql")).unwrap();
    let made = std::process::Command::new(&sqlite3)
        .arg("feed.db")
        .current_dir(&ex)
        .stdin(sql)
        .status()
        .unwrap();
    assert!(made.success());

    let rules = Rules::load(&ex.join("site.toml")).unwrap_or_else(|e| panic!("{e}"));
    let script = std::fs::canonicalize(ex.join("feed-db.cgi")).unwrap();
    let declared = merge(rules.declared_for(&script).expect("a rule").layers()).declaration;
    assert!(declared.feed);
    let argv = declared.probe_command.expect("probe_command");
    // As the engine will run it: argv, no shell, cwd the script's folder.
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(script.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = String::from_utf8(out.stdout).unwrap();
    let first = answer.lines().next().unwrap_or_default();
    assert_eq!(
        http_conditional::timestamp::parse_flexible(first),
        http_conditional::timestamp::from_unix(1_719_914_400),
        "{answer:?}"
    );

    // The feed itself (run through the wrapper: no sidecar yet, so it passes through).
    let r = Cgi::new(&script)
        .env("CONDITIONAL_CLIENT_DATE", "1718445600")
        .run();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(body.contains("Summer fair on the market square"), "{body}");
    assert!(!body.contains("Library opening hours"), "{body}");
    assert!(!body.contains("bus timetable"), "{body}");
}
