//! The responder driven by a raw FastCGI client straight to its socket: the protocol as the
//! FastCGI 1.0 specification has it (records, streams, management records, roles, keep-conn)
//! and the request outcomes the engine gives through it.

mod common;
mod fastcgi_support;

use std::time::Duration;

use bytes::BytesMut;
use fastcgi_support::*;
use http_conditional::fastcgi::codec::{
    ABORT_REQUEST, AUTHORIZER, CANT_MPX_CONN, END_REQUEST, GET_VALUES, GET_VALUES_RESULT, PARAMS,
    STDIN, STDOUT, UNKNOWN_ROLE, UNKNOWN_TYPE, decode_pairs, encode_pairs, parse_end_request,
};

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
    let (dir, responder) = setup("fcgi-mgmt", &["--max-children", "3"]);
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
    // Requests at once are the script slots, not the connection cap.
    assert_eq!(value("FCGI_MAX_REQS").as_deref(), Some("3"));
    assert_ne!(value("FCGI_MAX_CONNS").as_deref(), Some("3"));
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

#[test]
fn a_script_failing_mid_body_gets_no_end_request_and_the_connection_closes() {
    let (dir, responder) = setup("fcgi-cut", &[]);
    // Past the buffer, so the head is out before the failure: only closing can tell.
    dir.write(
        "fails.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 400000 /dev/zero\nexit 1\n",
        true,
    );
    dir.write(
        "stalls.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nhead -c 400000 /dev/zero\nexec sleep 30\n",
        true,
    );
    dir.sidecar("stalls.cgi", r#"{"timeout": 1}"#);
    for name in ["fails.cgi", "stalls.cgi"] {
        let mut client = responder.connect();
        let params = cgi_params(&dir.path, name);
        client
            .send_request(1, true, &as_refs(&params), b"")
            .unwrap();
        let reply = client.read_reply(1);
        assert_eq!(reply.status(), 200, "{name}: the head was sent");
        assert!(
            reply.body().len() >= 256 * 1024,
            "{name}: a body was streaming"
        );
        assert_eq!(
            reply.end, None,
            "{name}: a cut-short response must not end with END_REQUEST"
        );
        assert!(
            client.closed_within(Duration::from_secs(5)),
            "{name}: connection left open"
        );
    }
    assert_still_serving(&responder, &dir.path);
}

/// A script writing `head` then `body_bytes` bytes of body, under `dir`.
fn script_with(dir: &common::TempDir, name: &str, head: &str, body_bytes: usize) {
    dir.write(
        name,
        format!("#!/bin/sh\nprintf '{head}\\n\\n'\nhead -c {body_bytes} /dev/zero\n"),
        true,
    );
}

#[test]
fn a_local_location_without_status_is_a_302_found_as_nginx_gives() {
    let (dir, responder) = setup("fcgi-redirect", &[]);
    script_with(&dir, "moved.cgi", "Location: /elsewhere", 0);
    let reply = get(&responder, &dir.path, "moved.cgi", &[]);
    assert_eq!(
        reply.status(),
        302,
        "{}",
        String::from_utf8_lossy(&reply.stdout)
    );
    assert_eq!(reply.header("Location").as_deref(), Some("/elsewhere"));
    assert!(String::from_utf8_lossy(&reply.stdout).starts_with("Status: 302 Found\r\n"));
}

#[test]
fn a_scripts_1xx_status_is_a_malformed_head() {
    let (dir, responder) = setup("fcgi-1xx", &[]);
    for code in ["100 Continue", "103 Early Hints", "101 Switching Protocols"] {
        script_with(
            &dir,
            "early.cgi",
            &format!("Status: {code}\\nContent-Type: text/plain"),
            3,
        );
        let reply = get(&responder, &dir.path, "early.cgi", &[]);
        assert_eq!(reply.status(), 502, "{code}");
    }
}

#[test]
fn a_streamed_body_is_held_to_the_content_length_its_script_announced() {
    let (dir, responder) = setup("fcgi-length", &[]);
    let big = 600_000; // past the buffer, so the body streams with the script's own length
    // Exact: complete, the length passed on.
    script_with(&dir, "exact.cgi", &format!("Content-Length: {big}"), big);
    let reply = get(&responder, &dir.path, "exact.cgi", &[]);
    assert_eq!(reply.end, Some((0, 0)));
    assert_eq!(reply.header("Content-Length"), Some(big.to_string()));
    assert_eq!(reply.body().len(), big);
    // Too small or too large: never a complete response (no FCGI_END_REQUEST), and never more
    // body than announced.
    for (name, announced) in [("short.cgi", big + 1000), ("long.cgi", big - 1000)] {
        script_with(&dir, name, &format!("Content-Length: {announced}"), big);
        let mut client = responder.connect();
        let params = cgi_params(&dir.path, name);
        client
            .send_request(1, false, &as_refs(&params), b"")
            .unwrap();
        let reply = client.read_reply(1);
        assert_eq!(reply.end, None, "{name} ended cleanly");
        assert!(
            reply.body().len() < announced,
            "{name}: {}",
            reply.body().len()
        );
    }
    // Not a length at all: dropped, and the body streams without one.
    script_with(&dir, "bad.cgi", "Content-Length: 12, 13", big);
    let reply = get(&responder, &dir.path, "bad.cgi", &[]);
    assert_eq!(reply.end, Some((0, 0)));
    assert_eq!(reply.header("Content-Length"), None);
    assert_eq!(reply.body().len(), big);
}

#[test]
fn a_declared_304_and_a_412_with_a_body_keep_the_connection_ready_and_a_changed_sidecar_counts_at_once()
 {
    let (dir, responder) = setup("fcgi-unrun", &[]);
    dir.write(
        "page.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\npage\\n'\n",
        true,
    );
    dir.write(
        "page.cgi.conditional.json",
        r#"{"last_modified": 1000000000}"#,
        false,
    );
    let mut client = responder.connect();
    let params = cgi_params(&dir.path, "page.cgi");
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = params.clone();
        pairs.retain(|(n, _)| !extra.iter().any(|(e, _)| e == n));
        pairs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        pairs
    };
    client
        .send_request(1, true, &as_refs(&params), b"")
        .unwrap();
    let first = client.read_reply(1);
    assert_eq!(first.status(), 200);
    let etag = first.header("ETag").expect("an ETag");
    let revalidate = |client: &mut Client, id| {
        let pairs = with(&[("HTTP_IF_NONE_MATCH", &etag)]);
        client
            .send_request(id, true, &as_refs(&pairs), b"")
            .unwrap();
        client.read_reply(id)
    };

    // RFC 9110 §13.1.2: a matching If-None-Match on GET is a 304, head only, request complete.
    let not_modified = revalidate(&mut client, 2);
    assert_eq!(not_modified.end, Some((0, 0)));
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.header("ETag").as_deref(), Some(etag.as_str()));
    assert!(not_modified.header("Last-Modified").is_some());
    assert!(not_modified.body().is_empty());

    // RFC 9110 §13.1.1: If-Match with no current match is a 412; its body, sent after the
    // answer was decided, is dropped and the connection serves the next request.
    let post = with(&[
        ("REQUEST_METHOD", "POST"),
        ("HTTP_IF_MATCH", "\"nope\""),
        ("CONTENT_LENGTH", "200000"),
    ]);
    client.begin(3, true).unwrap();
    client.params(3, &as_refs(&post)).unwrap();
    for chunk in vec![b'x'; 200_000].chunks(50_000) {
        client.record(STDIN, 3, chunk).unwrap();
    }
    client.record(STDIN, 3, b"").unwrap();
    let failed = client.read_reply(3);
    assert_eq!(failed.status(), 412);
    assert_eq!(failed.end, Some((0, 0)));

    // A sidecar that changes gives a new stat, so the next request sees the new time.
    dir.write(
        "page.cgi.conditional.json",
        r#"{"last_modified": 2000000000}"#,
        false,
    );
    let changed = revalidate(&mut client, 4);
    assert_eq!(changed.status(), 200, "the old ETag no longer matches");
    assert_eq!(changed.body(), b"page\n");
    assert_ne!(changed.header("ETag"), Some(etag.clone()));
}

#[test]
fn a_script_whose_shebang_turns_to_the_wrapper_is_refused_at_once_even_for_a_304() {
    let (dir, responder) = setup("fcgi-shebang", &[]);
    // The wrapper under another name: recognised by its inode, as the responder's own file.
    let link = dir.join("hc-link");
    std::os::unix::fs::symlink(common::bin(), &link).unwrap();
    let body = "printf 'Content-Type: text/plain\\n\\npage\\n'\n";
    // Two versions of the same size: `#!/bin/sh` (padded) and `#!<the wrapper>` alone.
    let wrapper = format!("#!{}\n{body}", link.display());
    let sh_line = "#!/bin/sh\n#";
    let pad = "#".repeat(wrapper.len() - body.len() - sh_line.len() - 1);
    let sh = format!("{sh_line}{pad}\n{body}");
    assert_eq!(sh.len(), wrapper.len());
    let page = dir.write("page.cgi", &sh, true);
    common::set_mtime(&page, 1_600_000_000);
    // Feed mode: the script's mtime is not a validator, so only the shebang check can tell the
    // versions apart (a stale kept check would answer 304).
    dir.write(
        "page.cgi.conditional.json",
        r#"{"last_modified": 1000000000, "feed": true}"#,
        false,
    );
    let params = cgi_params(&dir.path, "page.cgi");
    let first = get(&responder, &dir.path, "page.cgi", &[]);
    assert_eq!(first.status(), 200, "{}", responder.log_text());
    let etag = first.header("ETag").expect("an ETag");
    let revalidate = || {
        let mut pairs = params.clone();
        pairs.push(("HTTP_IF_NONE_MATCH".into(), etag.clone()));
        let mut client = responder.connect();
        client
            .send_request(1, false, &as_refs(&pairs), b"")
            .unwrap();
        client.read_reply(1).status()
    };
    // A stamp is kept only once its version is older than the file system's clock tick
    // (file_stamp::SETTLE, one second): wait past it so the kept check is the one in use.
    let settle = || std::thread::sleep(Duration::from_millis(1300));
    settle();
    assert_eq!(revalidate(), 304);
    assert_eq!(revalidate(), 304, "served with the kept check");

    // Same size, new mtime, written in place: a new stamp, so the check is made again.
    std::fs::write(&page, &wrapper).unwrap();
    common::set_mtime(&page, 1_600_000_001);
    assert_eq!(revalidate(), 500, "the shebang names the wrapper");
    settle();
    assert_eq!(revalidate(), 500);
    assert_eq!(revalidate(), 500, "kept, and still refused");

    // Replaced by another inode of the same size and mtime (a deploy's rename).
    let next = dir.write("page.cgi.new", &sh, true);
    common::set_mtime(&next, 1_600_000_001);
    std::fs::rename(&next, &page).unwrap();
    assert_eq!(revalidate(), 304, "the new file's shebang is read");
    assert!(
        responder.log_text().contains("page.cgi"),
        "the refusals are logged: {}",
        responder.log_text()
    );
}
