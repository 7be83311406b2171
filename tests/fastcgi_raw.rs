//! The responder driven by a raw FastCGI client straight to its socket: the protocol as the
//! FastCGI 1.0 specification has it, then a hostile peer. After each hostile case the
//! responder still answers a normal request and no script process is left behind.

mod common;
mod fastcgi_support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::TempDir;
use fastcgi_support::*;
use http_conditional::fastcgi::codec::{
    ABORT_REQUEST, AUTHORIZER, CANT_MPX_CONN, END_REQUEST, GET_VALUES, GET_VALUES_RESULT, PARAMS,
    STDIN, STDOUT, UNKNOWN_ROLE, UNKNOWN_TYPE, decode_pairs, encode_pairs, parse_end_request,
};

/// A folder with the usual scripts and a responder serving it.
fn setup(label: &str, flags: &[&str]) -> (TempDir, Responder) {
    let dir = TempDir::new(label);
    write_scripts(&dir);
    let responder = Responder::start(&dir.path, &dir.join("hc.sock"), flags);
    (dir, responder)
}

/// A script that prints its head and some body, then waits on a background child whose
/// program path (a copy of sleep inside the temp folder) shows up in `ps`.
fn write_slow_script(dir: &TempDir) -> String {
    let sleeper = dir.join("sleeper");
    std::fs::copy("/bin/sleep", &sleeper).unwrap();
    dir.write(
        "slow.cgi",
        format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 300000 /dev/zero\n\
             {} 30 &\nwait\ntouch {}\n",
            sleeper.display(),
            dir.join("finished").display()
        ),
        true,
    );
    sleeper.display().to_string()
}

fn assert_no_leftovers(marker: &str) {
    assert!(
        eventually(Duration::from_secs(5), || leftovers(marker).is_empty()),
        "script processes left: {:?}",
        leftovers(marker)
    );
}

#[test]
fn keep_conn_serves_several_requests_on_one_connection() {
    let (dir, responder) = setup("fcgi-keep", &[]);
    let mut client = responder.connect();
    let params = cgi_params(&dir.path, "hello.cgi");
    for id in [1u16, 2, 1] {
        client
            .send_request(id, true, &as_refs(&params), b"")
            .unwrap();
        let reply = client.read_reply(id);
        assert_eq!(reply.end, Some((0, 0)));
        assert_eq!(reply.body(), b"hello\n");
        // Only the last STDOUT record is empty (FastCGI 1.0 §3.3: it ends the stream).
        let (last, before) = reply.stdout_records.split_last().unwrap();
        assert_eq!(*last, 0);
        assert!(before.iter().all(|&n| n > 0), "{:?}", reply.stdout_records);
    }
    // Without FCGI_KEEP_CONN the responder closes after the request (§5.1).
    client
        .send_request(3, false, &as_refs(&params), b"")
        .unwrap();
    assert_eq!(client.read_reply(3).end, Some((0, 0)));
    assert!(client.closed_within(Duration::from_secs(5)));
}

#[test]
fn management_records_and_unknown_roles() {
    let (dir, responder) = setup("fcgi-mgmt", &[]);
    let mut client = responder.connect();
    let mut names = BytesMut::new();
    let asked = [
        ("FCGI_MAX_CONNS", ""),
        ("FCGI_MAX_REQS", ""),
        ("FCGI_MPXS_CONNS", ""),
        ("FCGI_UNKNOWN", ""),
    ];
    encode_pairs(&asked, &mut names);
    client.record(GET_VALUES, 0, &names).unwrap();
    let got = client.read_records(1);
    assert_eq!(got[0].0, GET_VALUES_RESULT);
    let values = decode_pairs(&got[0].2).unwrap();
    let value = |n: &str| {
        values
            .iter()
            .find(|(k, _)| k == n.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(value("FCGI_MPXS_CONNS").as_deref(), Some("0"));
    assert!(value("FCGI_MAX_CONNS").unwrap().parse::<u32>().unwrap() > 0);
    assert!(value("FCGI_MAX_REQS").is_some());
    assert_eq!(
        value("FCGI_UNKNOWN"),
        None,
        "unknown names are left out (§4.1)"
    );

    // An unknown management record type gets FCGI_UNKNOWN_TYPE (§4.2).
    client.record(42, 0, b"whatever").unwrap();
    let got = client.read_records(1);
    assert_eq!((got[0].0, got[0].2[0]), (UNKNOWN_TYPE, 42));
    // Records only an application sends, and unknown types with an id, are ignored.
    client.record(STDOUT, 1, b"stray").unwrap();
    client.record(99, 1, b"stray").unwrap();

    // Roles other than responder get FCGI_UNKNOWN_ROLE (§5.5); the connection carries on.
    client.begin_role(5, AUTHORIZER, true).unwrap();
    let got = client.read_records(1);
    assert_eq!((got[0].0, got[0].1), (END_REQUEST, 5));
    assert_eq!(parse_end_request(&got[0].2), Some((0, UNKNOWN_ROLE)));

    // A second request while one is in progress: FCGI_CANT_MPX_CONN for it (§5.5).
    let params = cgi_params(&dir.path, "hello.cgi");
    client.begin(1, true).unwrap();
    client.begin(2, true).unwrap();
    let got = client.read_records(1);
    assert_eq!((got[0].0, got[0].1), (END_REQUEST, 2));
    assert_eq!(parse_end_request(&got[0].2), Some((0, CANT_MPX_CONN)));
    client.params(1, &as_refs(&params)).unwrap();
    client.record(STDIN, 1, b"").unwrap();
    assert_eq!(client.read_reply(1).body(), b"hello\n");
}

#[test]
fn params_are_bytes_in_order_and_may_straddle_records() {
    let (dir, responder) = setup("fcgi-params", &[]);
    dir.write(
        "env.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         printf '%s' \"$HTTP_X_BIN\" | od -An -tx1 | tr -d ' \\n'\necho\n\
         env | grep -c '^HTTP_X_MANY_'\n",
        true,
    );
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = cgi_params(&dir.path, "env.cgi")
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
        .collect();
    pairs.push((b"HTTP_X_BIN".to_vec(), b"\xff\xfe\xc3(".to_vec()));
    // 10,000 params: about 250 KB, so several records, cut at odd places.
    for i in 0..10_000 {
        pairs.push((format!("HTTP_X_MANY_{i}").into_bytes(), b"v".to_vec()));
    }
    let mut enc = BytesMut::new();
    encode_pairs(&pairs, &mut enc);
    let mut client = responder.connect();
    client.begin(1, false).unwrap();
    for chunk in enc.chunks(9_999) {
        client.record(PARAMS, 1, chunk).unwrap();
    }
    client.record(PARAMS, 1, b"").unwrap();
    client.record(STDIN, 1, b"").unwrap();
    let reply = client.read_reply(1);
    assert_eq!(reply.status(), 200, "{}", responder.log_text());
    assert_eq!(reply.body(), b"fffec328\n10000\n");
}

#[test]
fn stdout_is_streamed_and_stderr_goes_to_fcgi_stderr() {
    let (dir, responder) = setup("fcgi-streams", &[]);
    dir.write(
        "big.cgi",
        "#!/bin/sh\necho oops >&2\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 1000000 /dev/zero\n",
        true,
    );
    let reply = get(&responder, &dir.path, "big.cgi", &[]);
    assert_eq!(reply.end, Some((0, 0)));
    assert_eq!(reply.body(), vec![0u8; 1_000_000]);
    assert_eq!(reply.stderr, b"oops\n");
    let (last, before) = reply.stdout_records.split_last().unwrap();
    assert_eq!(*last, 0);
    assert!(before.iter().all(|&n| n > 0 && n <= 65535));
}

#[test]
fn post_bodies_are_echoed_byte_exact() {
    let (dir, responder) = setup("fcgi-post", &[]);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut params = cgi_params(&dir.path, "echo.cgi");
    params.retain(|(n, _)| n != "CONTENT_LENGTH" && n != "REQUEST_METHOD");
    params.push(("REQUEST_METHOD".into(), "POST".into()));
    params.push(("CONTENT_LENGTH".into(), body.len().to_string()));
    let mut client = responder.connect();
    client.begin(1, false).unwrap();
    client.params(1, &as_refs(&params)).unwrap();
    // Uneven STDIN records, as a proxy might cut them.
    for chunk in body.chunks(40_001) {
        client.record(STDIN, 1, chunk).unwrap();
    }
    client.record(STDIN, 1, b"").unwrap();
    let reply = client.read_reply(1);
    assert_eq!(reply.status(), 200);
    assert!(reply.body() == body, "echoed body differs");
}

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
fn records_for_unknown_request_ids_are_ignored() {
    let (dir, responder) = setup("fcgi-ids", &[]);
    let mut client = responder.connect();
    client.record(STDIN, 9, b"nobody asked").unwrap();
    client.record(PARAMS, 9, b"\x01\x01ab").unwrap();
    client.record(ABORT_REQUEST, 9, b"").unwrap();
    let params = cgi_params(&dir.path, "hello.cgi");
    client
        .send_request(1, true, &as_refs(&params), b"")
        .unwrap();
    // Interleaved records of an id that is not the current request are dropped too.
    client.record(STDIN, 7, b"noise").unwrap();
    assert_eq!(client.read_reply(1).body(), b"hello\n");
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

#[test]
fn missing_and_outside_scripts_and_document_root_fallback() {
    let (dir, responder) = setup("fcgi-404", &[]);
    let mut client = responder.connect();
    client
        .send_request(1, false, &[("REQUEST_METHOD", "GET")], b"")
        .unwrap();
    let reply = client.read_reply(1);
    assert_eq!(reply.status(), 404);
    let reply = get(&responder, &dir.path, "missing.cgi", &[]);
    assert_eq!(reply.status(), 404);
    // Outside --root: 403.
    let mut params = cgi_params(&dir.path, "hello.cgi");
    params.retain(|(n, _)| n != "SCRIPT_FILENAME");
    params.push(("SCRIPT_FILENAME".into(), "/bin/true".into()));
    let mut client = responder.connect();
    client
        .send_request(1, false, &as_refs(&params), b"")
        .unwrap();
    assert_eq!(client.read_reply(1).status(), 403);
    // DOCUMENT_ROOT + SCRIPT_NAME when SCRIPT_FILENAME is absent.
    let mut params = cgi_params(&dir.path, "hello.cgi");
    params.retain(|(n, _)| n != "SCRIPT_FILENAME");
    let mut client = responder.connect();
    client
        .send_request(1, false, &as_refs(&params), b"")
        .unwrap();
    assert_eq!(client.read_reply(1).body(), b"hello\n");
}

#[test]
fn max_children_answers_503_when_no_slot_frees_in_time() {
    let (dir, responder) = setup(
        "fcgi-503",
        &["--max-children", "1", "--queue-timeout", "0.3"],
    );
    let sleeper = write_slow_script(&dir);
    let slow = cgi_params(&dir.path, "slow.cgi");
    let mut busy = responder.connect();
    busy.send_request(1, true, &as_refs(&slow), b"").unwrap();
    assert!(eventually(Duration::from_secs(5), || !leftovers(&sleeper).is_empty()));
    let reply = get(&responder, &dir.path, "hello.cgi", &[]);
    assert_eq!(
        reply.status(),
        503,
        "{}",
        String::from_utf8_lossy(&reply.stdout)
    );
    busy.record(ABORT_REQUEST, 1, b"").unwrap();
    assert!(busy.read_reply(1).end.is_some());
    assert_no_leftovers(&sleeper);
    assert_still_serving(&responder, &dir.path);
}
