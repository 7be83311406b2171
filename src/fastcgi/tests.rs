//! The connection state machine over in-memory streams, with short limits: the timeouts and
//! the stop signal, which the black-box tests cannot wait for at their production values.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::codec::{
    BEGIN_REQUEST, END_REQUEST, KEEP_CONN, PARAMS, RESPONDER, STDIN, STDOUT, encode_pairs,
    encode_stream, take_records,
};
use super::{Limits, Service, Stop, connection};
use crate::engine::Engine;

const SHORT: Duration = Duration::from_millis(200);
/// Upper bound for anything these tests wait for.
const PATIENCE: Duration = Duration::from_secs(10);

/// A folder removed on drop, with an executable script written into it.
struct Root(PathBuf);

impl Root {
    fn new() -> Root {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("hc-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Root(std::fs::canonicalize(&path).unwrap())
    }

    fn script(&self, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn service(root: &Root) -> Arc<Service> {
    Arc::new(Service {
        engine: Engine {
            found_for_local_redirects: true,
            roots: vec![root.0.clone()],
            ..Engine::default()
        },
        timeout: None,
        base_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        max_children: 4,
        limits: Limits {
            header_timeout: SHORT,
            idle_timeout: SHORT,
            body_timeout: SHORT,
            write_timeout: SHORT,
            ..Limits::default()
        },
        metrics: None,
    })
}

/// A connection served in the background; the test holds the client end.
struct Conn {
    client: DuplexStream,
    served: tokio::task::JoinHandle<()>,
    stop: watch::Sender<Stop>,
}

fn connect(service: Arc<Service>, buffer: usize) -> Conn {
    let (client, server) = tokio::io::duplex(buffer);
    let (stop, stopped) = watch::channel(Stop::Running);
    let served = tokio::spawn(connection::serve_connection(server, service, stopped));
    Conn {
        client,
        served,
        stop,
    }
}

fn request_bytes(id: u16, keep_conn: bool, script: &str, stdin: Option<&[u8]>) -> Vec<u8> {
    let mut out = BytesMut::new();
    let flags = if keep_conn { KEEP_CONN } else { 0 };
    let [hi, lo] = RESPONDER.to_be_bytes();
    encode_stream(BEGIN_REQUEST, id, &[hi, lo, flags, 0, 0, 0, 0, 0], &mut out);
    let mut pairs = BytesMut::new();
    encode_pairs(
        &[("REQUEST_METHOD", "GET"), ("SCRIPT_FILENAME", script)],
        &mut pairs,
    );
    encode_stream(PARAMS, id, &pairs, &mut out);
    encode_stream(PARAMS, id, b"", &mut out);
    if let Some(body) = stdin {
        encode_stream(STDIN, id, body, &mut out);
        encode_stream(STDIN, id, b"", &mut out);
    }
    out.to_vec()
}

/// Reads records until END_REQUEST; the STDOUT bytes.
async fn read_response(client: &mut DuplexStream) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut stdout = Vec::new();
    loop {
        for (t, _, content) in take_records(&mut buf).unwrap() {
            match t {
                STDOUT => stdout.extend_from_slice(&content),
                END_REQUEST => return stdout,
                _ => {}
            }
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before END_REQUEST");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the server side to end; how long that took.
async fn closes(conn: Conn) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(PATIENCE, conn.served)
        .await
        .expect("connection still served")
        .expect("connection task panicked");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_new_connection_is_closed_after_the_header_timeout() {
    let root = Root::new();
    let conn = connect(service(&root), 64 * 1024);
    let took = closes(conn).await;
    assert!(took >= SHORT - Duration::from_millis(20) && took < SHORT * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_that_never_end_hit_the_header_timeout() {
    let root = Root::new();
    let mut conn = connect(service(&root), 64 * 1024);
    let bytes = request_bytes(1, true, "/x", None);
    // BEGIN and part of the params, then silence.
    conn.client.write_all(&bytes[..20]).await.unwrap();
    closes(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_connection_is_closed_after_the_idle_timeout() {
    let root = Root::new();
    let mut conn = connect(service(&root), 64 * 1024);
    let missing = root.0.join("missing.cgi").display().to_string();
    conn.client
        .write_all(&request_bytes(1, true, &missing, Some(b"")))
        .await
        .unwrap();
    let out = read_response(&mut conn.client).await;
    assert!(out.starts_with(b"Status: 404"));
    closes(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_hits_the_body_timeout_and_the_script_is_killed() {
    let root = Root::new();
    let marker = root.0.join("late");
    let script = root.script(
        "reads.cgi",
        &format!(
            "#!/bin/sh\ncat >/dev/null\ntouch {}\nprintf 'Status: 200 OK\\n\\n'\n",
            marker.display()
        ),
    );
    let mut conn = connect(service(&root), 64 * 1024);
    let mut bytes = request_bytes(1, true, &script, None);
    encode_stdin(&mut bytes, b"some of the body");
    conn.client.write_all(&bytes).await.unwrap();
    closes(conn).await;
    tokio::time::sleep(SHORT).await;
    assert!(
        !marker.exists(),
        "the script saw an end of body that never came"
    );
}

fn encode_stdin(out: &mut Vec<u8>, content: &[u8]) {
    let mut buf = BytesMut::new();
    encode_stream(STDIN, 1, content, &mut buf);
    out.extend_from_slice(&buf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_hits_the_write_timeout() {
    let root = Root::new();
    let script = root.script(
        "big.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec head -c 20000000 /dev/zero\n",
    );
    // A small in-memory buffer that the client never drains.
    let mut conn = connect(service(&root), 16 * 1024);
    conn.client
        .write_all(&request_bytes(1, true, &script, Some(b"")))
        .await
        .unwrap();
    closes(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_an_idle_connection_and_lets_a_running_request_finish() {
    let root = Root::new();
    let mut service = (*service(&root)).clone();
    service.limits.idle_timeout = PATIENCE;
    service.limits.header_timeout = PATIENCE;
    let service = Arc::new(service);
    let idle = connect(Arc::clone(&service), 64 * 1024);
    idle.stop.send(Stop::Draining).unwrap();
    assert!(closes(idle).await < PATIENCE / 2);

    let script = root.script(
        "slow.cgi",
        "#!/bin/sh\nsleep 0.3\nprintf 'Content-Type: text/plain\\n\\ndone'\n",
    );
    let mut busy = connect(service, 64 * 1024);
    busy.client
        .write_all(&request_bytes(1, true, &script, Some(b"")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    busy.stop.send(Stop::Draining).unwrap();
    let out = read_response(&mut busy.client).await;
    assert!(out.ends_with(b"done"), "{}", String::from_utf8_lossy(&out));
    closes(busy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_kills_a_running_script() {
    let root = Root::new();
    let marker = root.0.join("finished");
    let script = root.script(
        "long.cgi",
        &format!("#!/bin/sh\nsleep 5\ntouch {}\n", marker.display()),
    );
    let mut service = (*service(&root)).clone();
    service.limits.idle_timeout = PATIENCE;
    let mut conn = connect(Arc::new(service), 64 * 1024);
    conn.client
        .write_all(&request_bytes(1, true, &script, Some(b"")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.stop.send(Stop::Draining).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !conn.served.is_finished(),
        "draining must let the request run"
    );
    conn.stop.send(Stop::Killing).unwrap();
    assert!(closes(conn).await < Duration::from_secs(2));
    assert!(!marker.exists());
}

#[test]
fn script_path_from_script_filename_document_root_or_mod_proxy_fcgi() {
    let request = |vars: &[(&str, &str)]| {
        crate::request::Request::new(
            vars.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        )
    };
    let path = |vars: &[(&str, &str)]| super::request::script_path(&request(vars));
    assert_eq!(
        path(&[("SCRIPT_FILENAME", "/srv/a.cgi")]),
        Some(PathBuf::from("/srv/a.cgi"))
    );
    assert_eq!(
        path(&[("SCRIPT_FILENAME", "proxy:fcgi://localhost/srv/a.cgi")]),
        Some(PathBuf::from("/srv/a.cgi"))
    );
    assert_eq!(path(&[("SCRIPT_FILENAME", "proxy:fcgi://localhost")]), None);
    assert_eq!(
        path(&[("DOCUMENT_ROOT", "/srv"), ("SCRIPT_NAME", "/a.cgi")]),
        Some(PathBuf::from("/srv/a.cgi"))
    );
}
