//! A hostile peer speaking raw FastCGI straight to the responder's socket: malformed and
//! truncated records, oversized params, aborts, disconnects, idle connections, a large upload.
//! After each case the responder still answers a normal request and no script process is
//! left behind.

mod common;
mod fastcgi_support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use fastcgi_support::*;
use http_conditional::fastcgi::codec::{
    ABORT_REQUEST, END_REQUEST, GET_VALUES, PARAMS, STDERR, STDIN, STDOUT, encode_pairs,
};

#[test]
fn malformed_records_end_that_connection_only() {
    let (dir, responder) = setup("fcgi-malformed", &[]);
    let slow = write_slow_script(&dir);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "wrong version",
            vec![2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        ("version 0", vec![0, 5, 0, 1, 0, 0, 0, 0]),
        (
            "short BEGIN_REQUEST body",
            vec![1, 1, 0, 1, 0, 2, 0, 0, 0, 1],
        ),
        ("empty BEGIN_REQUEST body", vec![1, 1, 0, 1, 0, 0, 0, 0]),
        (
            "null request id",
            vec![1, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            "GET_VALUES with an id",
            vec![1, GET_VALUES, 0, 7, 0, 0, 0, 0],
        ),
        (
            "pair longer than its record",
            vec![1, GET_VALUES, 0, 0, 0, 3, 0, 0, 5, 0, b'a'],
        ),
    ];
    // A request in flight on another connection must not notice.
    let mut in_flight = responder.connect();
    let slow_params = cgi_params(&dir.path, "slow.cgi");
    in_flight
        .send_request(1, false, &as_refs(&slow_params), b"")
        .unwrap();
    assert_eq!(in_flight.read_records(1)[0].0, STDOUT);
    for (what, bytes) in cases {
        let mut client = responder.connect();
        let _ = client.raw(&bytes);
        assert!(
            client.closed_within(Duration::from_secs(5)),
            "{what}: connection not closed"
        );
        assert_still_serving(&responder, &dir.path);
    }
    // STDIN before the end of the params, and a request id begun twice.
    let mut client = responder.connect();
    client.begin(1, true).unwrap();
    client.record(STDIN, 1, b"early").unwrap();
    assert!(client.closed_within(Duration::from_secs(5)));
    let mut client = responder.connect();
    client.begin(1, true).unwrap();
    client.begin(1, true).unwrap();
    assert!(client.closed_within(Duration::from_secs(5)));
    // Params that end inside a pair.
    let mut client = responder.connect();
    client.begin(1, true).unwrap();
    client.record(PARAMS, 1, &[5, 5, b'a']).unwrap();
    client.record(PARAMS, 1, b"").unwrap();
    assert!(client.closed_within(Duration::from_secs(5)));
    assert_still_serving(&responder, &dir.path);
    // The slow request was untouched: its script still runs until aborted.
    assert!(!leftovers(&slow).is_empty());
    in_flight.record(ABORT_REQUEST, 1, b"").unwrap();
    assert!(in_flight.read_reply(1).end.is_some());
    assert_no_leftovers(&slow);
}

#[test]
fn truncated_records_and_lengths_larger_than_sent() {
    let (dir, responder) = setup("fcgi-truncated", &[]);
    // Closed inside a header, inside a body, inside padding.
    for bytes in [
        &[1u8, 1, 0][..],
        &[1, PARAMS, 0, 1, 0, 100, 0, 0, 1, 2, 3][..],
        &[1, STDIN, 0, 1, 0, 1, 7, 0, b'x', 0][..],
    ] {
        let mut client = responder.connect();
        client.raw(bytes).unwrap();
        drop(client);
        assert_still_serving(&responder, &dir.path);
    }
    // A record announcing more than is sent, the connection left open: the wait for it
    // holds that connection only.
    let mut stalled = responder.connect();
    stalled.begin(1, false).unwrap();
    stalled
        .raw(&[1, PARAMS, 0, 1, 0xff, 0xff, 0, 0, 1, 2])
        .unwrap();
    let start = Instant::now();
    assert_still_serving(&responder, &dir.path);
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(stalled);
    assert_still_serving(&responder, &dir.path);
}

#[test]
fn huge_and_endless_params_get_431_without_allocating() {
    let (dir, responder) = setup("fcgi-431", &[]);
    let before = responder.rss_kib();
    // A 2^31 - 1 byte name declared in a 4-byte length: refused before any allocation.
    let mut client = responder.connect();
    client.begin(1, false).unwrap();
    client
        .record(PARAMS, 1, &[0xff, 0xff, 0xff, 0xff, 0x01, b'n'])
        .unwrap();
    let reply = client.read_reply(1);
    assert_eq!(reply.status(), 431);
    assert!(client.closed_within(Duration::from_secs(5)));
    // Many full records of params: refused at the 1 MiB limit.
    let mut client = responder.connect();
    client.begin(1, false).unwrap();
    let pair_bytes = {
        let mut enc = BytesMut::new();
        encode_pairs(&[("HTTP_X", vec![b'v'; 65_000])], &mut enc);
        enc
    };
    let mut sent = 0;
    while sent < 2 << 20 && client.record(PARAMS, 1, &pair_bytes).is_ok() {
        sent += pair_bytes.len();
    }
    let reply = client.read_reply(1);
    assert_eq!(reply.status(), 431);
    assert!(
        responder.rss_kib() < before + 32 * 1024,
        "RSS grew too much"
    );
    assert_still_serving(&responder, &dir.path);
}

#[test]
fn abort_before_and_while_the_script_runs() {
    let (dir, responder) = setup("fcgi-abort", &[]);
    let sleeper = write_slow_script(&dir);
    let slow = cgi_params(&dir.path, "slow.cgi");

    // Mid-request, params not complete: answered at once (§5.4).
    let mut client = responder.connect();
    client.begin(1, true).unwrap();
    client.record(ABORT_REQUEST, 1, b"").unwrap();
    assert_eq!(client.read_reply(1).end, Some((0, 0)));

    // Mid-request, body still arriving, script running.
    client.begin(2, true).unwrap();
    client.params(2, &as_refs(&slow)).unwrap();
    client.record(STDIN, 2, b"part of a body").unwrap();
    assert!(eventually(Duration::from_secs(5), || !leftovers(&sleeper).is_empty()));
    client.record(ABORT_REQUEST, 2, b"").unwrap();
    let reply = client.read_reply(2);
    assert!(reply.end.is_some(), "no END_REQUEST after the abort");
    assert_no_leftovers(&sleeper);

    // Mid-response: the first STDOUT is in, the script still runs.
    client.send_request(3, true, &as_refs(&slow), b"").unwrap();
    let first = client.read_records(1);
    assert_eq!(first[0].0, STDOUT);
    assert!(eventually(Duration::from_secs(5), || !leftovers(&sleeper).is_empty()));
    client.record(ABORT_REQUEST, 3, b"").unwrap();
    let reply = client.read_reply(3);
    assert!(reply.end.is_some(), "no END_REQUEST after the abort");
    assert_no_leftovers(&sleeper);
    assert!(
        !dir.join("finished").exists(),
        "the script ran on after the abort"
    );

    // The same connection carries on.
    let params = cgi_params(&dir.path, "hello.cgi");
    client
        .send_request(4, true, &as_refs(&params), b"")
        .unwrap();
    assert_eq!(client.read_reply(4).body(), b"hello\n");
}

#[test]
fn a_disconnect_mid_response_kills_the_script() {
    let (dir, responder) = setup("fcgi-disconnect", &[]);
    let sleeper = write_slow_script(&dir);
    let slow = cgi_params(&dir.path, "slow.cgi");
    let mut client = responder.connect();
    client.send_request(1, true, &as_refs(&slow), b"").unwrap();
    assert_eq!(client.read_records(1)[0].0, STDOUT);
    assert!(eventually(Duration::from_secs(5), || !leftovers(&sleeper).is_empty()));
    drop(client);
    assert_no_leftovers(&sleeper);
    // Disconnected before reading anything, while the body was still expected.
    let mut client = responder.connect();
    client.begin(1, true).unwrap();
    client.params(1, &as_refs(&slow)).unwrap();
    assert!(eventually(Duration::from_secs(5), || !leftovers(&sleeper).is_empty()));
    drop(client);
    assert_no_leftovers(&sleeper);
    assert!(!dir.join("finished").exists());
    assert_still_serving(&responder, &dir.path);
}

#[test]
fn many_idle_connections_do_not_block_a_request() {
    let (dir, responder) = setup("fcgi-idle", &[]);
    let mut idle = Vec::new();
    for i in 0..500 {
        let mut client = responder.connect();
        if i % 2 == 0 {
            // Half of them stop inside a request.
            client.begin(1, true).unwrap();
        }
        idle.push(client);
    }
    let start = Instant::now();
    assert_still_serving(&responder, &dir.path);
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(idle);
    assert_still_serving(&responder, &dir.path);
}

#[test]
fn a_large_upload_streams_with_flat_memory() {
    let (dir, responder) = setup("fcgi-upload", &[]);
    const TOTAL: usize = 1 << 30;
    let mut params = cgi_params(&dir.path, "count.cgi");
    params.retain(|(n, _)| n != "CONTENT_LENGTH" && n != "REQUEST_METHOD");
    params.push(("REQUEST_METHOD".into(), "POST".into()));
    params.push(("CONTENT_LENGTH".into(), TOTAL.to_string()));
    let mut client = responder.connect();
    client.begin(1, false).unwrap();
    client.params(1, &as_refs(&params)).unwrap();
    let before = responder.rss_kib();
    let chunk = vec![b'u'; 65_535];
    let mut sent = 0;
    let mut peak = before;
    let start = Instant::now();
    while sent < TOTAL {
        let n = chunk.len().min(TOTAL - sent);
        client.record(STDIN, 1, &chunk[..n]).unwrap();
        sent += n;
        if sent % (16 << 20) < n {
            peak = peak.max(responder.rss_kib());
        }
    }
    client.record(STDIN, 1, b"").unwrap();
    let reply = client.read_reply(1);
    assert_eq!(reply.body(), format!("{TOTAL}\n").as_bytes());
    eprintln!(
        "1 GiB upload in {:?}; responder RSS {before} KiB before, peak {peak} KiB",
        start.elapsed()
    );
    assert!(
        peak < before + 16 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
}

#[test]
fn a_script_that_never_reads_its_body_does_not_wedge_the_connection() {
    let (dir, responder) = setup("fcgi-unread", &[]);
    // hello.cgi never reads stdin: the body is dropped and the connection stays usable.
    let params = cgi_params(&dir.path, "hello.cgi");
    let mut client = responder.connect();
    client.begin(1, true).unwrap();
    client.params(1, &as_refs(&params)).unwrap();
    let body = vec![b'b'; 4 << 20];
    client.record(STDIN, 1, &body).unwrap();
    client.record(STDIN, 1, b"").unwrap();
    assert_eq!(client.read_reply(1).body(), b"hello\n");
    client
        .send_request(2, true, &as_refs(&params), b"")
        .unwrap();
    assert_eq!(client.read_reply(2).body(), b"hello\n");
}

/// A local user plants a FIFO or a link to /dev/zero where the responder reads a sidecar or a
/// session file: each request is answered at once (500 naming the sidecar; the session treated
/// as absent), and requests for them in flight never keep SIGTERM from stopping the responder.
#[test]
fn planted_fifos_and_devices_are_answered_at_once_and_sigterm_still_stops_the_responder() {
    let (dir, mut responder) = setup("fcgi-planted", &[]);
    let page = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\npage'\n";
    dir.write("fifo.cgi", page, true);
    common::mkfifo(&dir.join("fifo.cgi.conditional.json"));
    dir.write("zero.cgi", page, true);
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.cgi.conditional.json")).unwrap();
    let sessions = dir.join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    common::mkfifo(&sessions.join("sess_fifo"));
    std::os::unix::fs::symlink("/dev/zero", sessions.join("sess_zero")).unwrap();
    dir.write("session.cgi", page, true);
    dir.sidecar(
        "session.cgi",
        &format!(
            r#"{{"session": {{"cookie": "PHPSESSID", "save_path": "{}"}}}}"#,
            sessions.display()
        ),
    );
    // (script, extra params, status)
    type Case = (&'static str, &'static [(&'static str, &'static str)], u16);
    let cases: [Case; 4] = [
        ("fifo.cgi", &[], 500),
        ("zero.cgi", &[], 500),
        ("session.cgi", &[("HTTP_COOKIE", "PHPSESSID=fifo")], 200),
        ("session.cgi", &[("HTTP_COOKIE", "PHPSESSID=zero")], 200),
    ];
    for (name, extra, status) in cases {
        let reply = get(&responder, &dir.path, name, extra);
        assert!(reply.end.is_some(), "{name} {extra:?}: no END_REQUEST");
        assert_eq!(reply.status(), status, "{name} {extra:?}");
        if status == 500 {
            let body = String::from_utf8_lossy(&reply.body()).into_owned();
            assert!(body.contains(&format!("{name}.conditional.json")), "{body}");
        } else {
            assert_eq!(reply.body(), b"page");
        }
    }
    assert_still_serving(&responder, &dir.path);

    // The same requests in flight when SIGTERM comes: the responder finishes them and exits.
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        for (name, extra, _) in cases {
            let mut pairs = cgi_params(&dir.path, name);
            pairs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            let mut client = responder.connect();
            client.send_request(1, true, &as_refs(&pairs), b"").unwrap();
            in_flight.push(client);
        }
    }
    responder.terminate();
    assert_eq!(responder.wait_exit(PATIENCE), Some(0));
}

/// nginx writes each FCGI_STDERR record into its error log as it is: one record per line, with
/// control characters escaped, so a script cannot forge or garble that log.
#[test]
fn fcgi_stderr_is_one_escaped_record_per_line() {
    let (dir, responder) = setup("fcgi-stderr", &[]);
    dir.write(
        "talk.cgi",
        "#!/bin/sh\nprintf 'one\\r\\033[2Ktwo\\nthree\\nlast' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n",
        true,
    );
    let mut client = responder.connect();
    let params = cgi_params(&dir.path, "talk.cgi");
    client
        .send_request(1, false, &as_refs(&params), b"")
        .unwrap();
    let mut stderr = Vec::new();
    'reply: loop {
        let records = client.read_records(1);
        assert!(
            !records.is_empty(),
            "the connection closed before END_REQUEST"
        );
        for (kind, _, content) in records {
            match kind {
                STDERR if !content.is_empty() => stderr.push(String::from_utf8(content).unwrap()),
                END_REQUEST => break 'reply,
                _ => {}
            }
        }
    }
    assert_eq!(stderr, ["one\\x0d\\x1b[2Ktwo\n", "three\n", "last\n"]);
}
