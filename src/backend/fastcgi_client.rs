//! The script as a request to a FastCGI application already running (php-fpm, or any
//! FastCGI 1.0 responder): our own record layer ([`crate::fastcgi_protocol`]) in the client's
//! direction, on blocking sockets, with a small pool of kept connections per upstream (which
//! [`super::fastcgi_async`] shares for the requests it runs on a front end's task).
//!
//! One request per connection at a time (request id 1, no multiplexing: php-fpm says
//! `FCGI_MPXS_CONNS=0`). FCGI_STDIN is written by a feeder thread while FCGI_STDOUT is read,
//! so a large upload never deadlocks against a script that answers before reading it all.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::fastcgi_async::Prefetch;
use super::{AbortHandle, Backend, Ended, ErrorOutput, Input, RunError, ScriptCall, ScriptRun};
use crate::failure::Failure;
use crate::fastcgi_protocol::{
    ABORT_REQUEST, BEGIN_REQUEST, CANT_MPX_CONN, END_REQUEST, MAX_CONTENT_LEN, OVERLOADED, PARAMS,
    REQUEST_COMPLETE, RESPONDER, STDERR, STDIN, STDOUT, begin_request_body, encode_pairs,
    encode_stream, parse_end_request, take_record,
};
use crate::slots::{SlotGuard, Slots};

/// The only request id we use: one request per connection at a time.
pub(super) const REQUEST_ID: u16 = 1;
/// How often a blocked read or write wakes to check the deadline and the abort flag.
pub(super) const TICK: Duration = Duration::from_millis(50);
/// A TCP upstream that does not accept within this time is unreachable.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Body bytes per FCGI_STDIN record read from the request body.
const STDIN_CHUNK: usize = 32 * 1024;

/// How the connections to each upstream are kept.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Connections open at once per upstream, in use or idle (`--max-children`).
    pub max_connections: usize,
    /// Idle connections kept per upstream (`--upstream-keep`; 0 closes each after use). php-fpm
    /// ties a worker to each kept connection, so few are kept.
    pub keep_idle: usize,
    /// An idle connection is closed after this long (`--upstream-idle-timeout`), freeing the
    /// php-fpm worker it holds for other clients of the same pool.
    pub idle_timeout: Duration,
    /// How long a request waits for a connection when all are in use, before 503.
    pub queue_timeout: Duration,
}

impl Default for PoolConfig {
    /// CGI mode's: one connection per request, closed after it.
    fn default() -> Self {
        PoolConfig {
            max_connections: 1,
            keep_idle: 0,
            idle_timeout: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// The FastCGI applications requests are forwarded to, one pool of connections each.
#[derive(Default)]
pub struct Upstreams {
    config: PoolConfig,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// A pool exists: some request was forwarded (read without the lock).
    used: AtomicBool,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Upstreams whose connections are kept as `config` says.
    pub fn new(config: PoolConfig) -> Self {
        Upstreams {
            config,
            pools: Mutex::new(HashMap::new()),
            used: AtomicBool::new(false),
        }
    }

    /// A backend forwarding to `address` (`unix:/path` or `HOST:PORT`). `retry_safe` allows one
    /// retry on a new connection when a kept one fails before any response byte (GET, HEAD).
    pub fn backend(&self, address: &str, retry_safe: bool) -> Result<FastCgiBackend, Failure> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let pool = match pools.get(address) {
            Some(pool) => Arc::clone(pool),
            None => {
                let target = Address::parse(address).ok_or_else(|| Failure::BadUpstream {
                    address: address.to_string(),
                })?;
                let pool = Pool::new(target, address.to_string(), self.config.clone());
                pools.insert(address.to_string(), Arc::clone(&pool));
                self.used.store(true, Ordering::Relaxed);
                pool
            }
        };
        Ok(FastCgiBackend { pool, retry_safe })
    }

    /// Whether any request has been forwarded to an upstream yet.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// How each upstream's connections stand now, for the metrics.
    pub fn connections(&self) -> Vec<UpstreamConnections> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<UpstreamConnections> = pools
            .values()
            .map(|pool| UpstreamConnections {
                upstream: pool.label.clone(),
                in_use: pool.in_use.in_use(),
                idle: pool.lock_idle().len(),
                waiting: pool.in_use.waiting(),
                opened: pool.opened.load(Ordering::Relaxed),
                on_task: pool.on_task.load(Ordering::Relaxed),
                handed_over: pool.handed_over.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        all
    }
}

/// One upstream's connections at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConnections {
    /// The address as configured.
    pub upstream: String,
    /// Requests holding a connection (or connecting).
    pub in_use: usize,
    /// Kept connections waiting for the next request.
    pub idle: usize,
    /// Requests waiting for a connection because all are in use.
    pub waiting: usize,
    /// Connections opened since start.
    pub opened: u64,
    /// Requests exchanged and finished on the front end's task, without a blocking thread.
    pub on_task: u64,
    /// Requests begun on the front end's task and then handed to a blocking thread (a
    /// response past the buffer, or a kept connection to retry).
    pub handed_over: u64,
}

/// Where an upstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `unix:/path`.
    Unix(PathBuf),
    /// `HOST:PORT`.
    Tcp(String),
}

impl Address {
    /// `unix:/path` or `HOST:PORT`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Address> {
        if let Some(path) = text.strip_prefix("unix:") {
            return (!path.is_empty()).then(|| Address::Unix(PathBuf::from(path)));
        }
        let (host, port) = text.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| Address::Tcp(text.to_string()))
    }

    /// Connects within `limit`. A unix socket whose listen queue is full (every worker busy,
    /// the queue filled) would block a plain connect until it drains, so it is tried without
    /// blocking, again and again until `limit`.
    fn connect(&self, limit: Instant, abort: &AbortHandle) -> Result<Stream, Unconnected> {
        let stream = match self {
            Address::Unix(path) => Stream::Unix(connect_unix(path, limit, abort)?),
            Address::Tcp(target) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut connected = None;
                for addr in target.to_socket_addrs()? {
                    let left = limit.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Unconnected::Busy("connecting took too long".into()));
                    }
                    match TcpStream::connect_timeout(&addr, left.min(CONNECT_TIMEOUT)) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                Stream::Tcp(connected.ok_or(last)?)
            }
        };
        stream.set_timeouts(Some(TICK))?;
        Ok(stream)
    }
}

/// Why no connection was made.
pub(super) enum Unconnected {
    /// The upstream is not there (no socket, refused, no route).
    Unreachable(io::Error),
    /// It is there but takes no connection now (its listen queue is full).
    Busy(String),
    /// The client went away meanwhile.
    Aborted,
}

impl From<io::Error> for Unconnected {
    fn from(e: io::Error) -> Self {
        Unconnected::Unreachable(e)
    }
}

/// How often a connect to a full unix listen queue is tried again.
pub(super) const CONNECT_RETRY: Duration = Duration::from_millis(5);

fn connect_unix(
    path: &std::path::Path,
    limit: Instant,
    abort: &AbortHandle,
) -> Result<UnixStream, Unconnected> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let address = SocketAddrUnix::new(path).map_err(io::Error::from)?;
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        match rustix::net::connect(&fd, &address) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(Unconnected::Unreachable(e.into())),
        }
        if abort.is_aborted() {
            return Err(Unconnected::Aborted);
        }
        if Instant::now() >= limit {
            return Err(Unconnected::Busy("its listen queue stayed full".into()));
        }
        std::thread::sleep(CONNECT_RETRY);
    }
}

/// A connection to an upstream.
pub(super) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub(super) fn set_timeouts(&self, tick: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(tick)?;
                s.set_write_timeout(tick)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(tick)?;
                s.set_write_timeout(tick)
            }
        }
    }

    pub(super) fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Whether a kept connection is still usable: the upstream has neither closed it
    /// (php-fpm recycling a worker at `pm.max_requests`) nor sent anything unasked.
    fn is_idle_and_open(&mut self) -> bool {
        use rustix::net::RecvFlags;
        let mut probe = [0u8; 1];
        // One peek that does not block, rather than switching the socket to non-blocking
        // and back around a read (three system calls per request).
        let peeked = match self {
            Stream::Unix(s) => {
                rustix::net::recv(&*s, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT)
            }
            Stream::Tcp(s) => {
                rustix::net::recv(&*s, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT)
            }
        };
        matches!(peeked, Err(rustix::io::Errno::AGAIN))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A timed-out blocking read or write (SO_RCVTIMEO / SO_SNDTIMEO): time to look around.
fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Writes all of `data`, waking every tick to give up when `stop` is set or `deadline` passed.
fn write_all_ticking(
    stream: &mut Stream,
    mut data: &[u8],
    stop: &AtomicBool,
    deadline: Instant,
) -> io::Result<()> {
    while !data.is_empty() {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return Err(io::Error::other("request ended"));
        }
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if is_tick(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct IdleConnection {
    stream: Stream,
    since: Instant,
}

/// The connections to one upstream.
pub(super) struct Pool {
    pub(super) address: Address,
    /// The address as configured, for the log.
    pub(super) label: String,
    config: PoolConfig,
    /// Connections in use, capped at `max_connections`.
    pub(super) in_use: Arc<Slots>,
    idle: Mutex<Vec<IdleConnection>>,
    /// Requests sent on new connections that have no answer yet: while there are any, a
    /// finished connection is closed rather than kept, since the worker it holds may be the
    /// one they wait for (php-fpm serves a kept connection until it is closed).
    waiting_on_new: AtomicUsize,
    /// Connections opened since start.
    opened: AtomicU64,
    /// Requests exchanged on a front end's task: finished there, or handed over.
    pub(super) on_task: AtomicU64,
    pub(super) handed_over: AtomicU64,
}

impl Pool {
    fn new(address: Address, label: String, config: PoolConfig) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            address,
            label,
            in_use: Slots::new(config.max_connections, config.queue_timeout),
            config,
            idle: Mutex::new(Vec::new()),
            waiting_on_new: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            on_task: AtomicU64::new(0),
            handed_over: AtomicU64::new(0),
        });
        if pool.config.keep_idle > 0 {
            let reaped = Arc::clone(&pool);
            let _ = std::thread::Builder::new()
                .name("upstream-reaper".into())
                .spawn(move || reaped.reap_forever());
        }
        pool
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle connections as they pass the idle timeout. It sleeps until the oldest one's
    /// time is up, or for a whole idle timeout when none is kept: a connection kept meanwhile
    /// expires no earlier than that, so nothing need wake the reaper when one is checked in
    /// (which would cost a wake-up and two context switches per request).
    fn reap_forever(&self) {
        loop {
            let now = Instant::now();
            let next = {
                let mut idle = self.lock_idle();
                idle.retain(|c| now.duration_since(c.since) < self.config.idle_timeout);
                idle.iter()
                    .map(|c| c.since + self.config.idle_timeout)
                    .min()
            };
            let wait = next.map_or(self.config.idle_timeout, |at| {
                at.saturating_duration_since(now)
            });
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        }
    }

    /// A kept connection still open, if any.
    pub(super) fn take_idle(&self) -> Option<Stream> {
        let mut idle = self.lock_idle();
        while let Some(mut kept) = idle.pop() {
            if kept.since.elapsed() < self.config.idle_timeout && kept.stream.is_idle_and_open() {
                return Some(kept.stream);
            }
        }
        None
    }

    /// A new connection within `CONNECT_TIMEOUT` and the request's deadline.
    fn connect(&self, call: &Call<'_>) -> Result<Stream, Failure> {
        let limit = call.deadline.min(Instant::now() + CONNECT_TIMEOUT);
        let stream = self
            .address
            .connect(limit, call.abort)
            .map_err(|e| self.unconnected(e, call.script))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// The failure of a connection not made: unreachable is 502, busy 503.
    pub(super) fn unconnected(&self, e: Unconnected, script: &str) -> Failure {
        match e {
            Unconnected::Unreachable(e) => Failure::UpstreamUnreachable {
                address: self.label.clone(),
                reason: e.to_string(),
            },
            Unconnected::Busy(reason) => Failure::UpstreamRefused {
                script: script.to_string(),
                reason: format!("upstream {}: {reason}", self.label),
            },
            Unconnected::Aborted => Failure::Io(io::ErrorKind::ConnectionAborted.into()),
        }
    }

    /// Counts a connection opened.
    pub(super) fn note_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// FCGI_BEGIN_REQUEST and the environment as FCGI_PARAMS: every request's first bytes.
    fn begin_and_params(&self, env: &[(std::ffi::OsString, std::ffi::OsString)]) -> BytesMut {
        let mut request = BytesMut::new();
        encode_stream(
            BEGIN_REQUEST,
            REQUEST_ID,
            // Without connections to keep (CGI mode), the application may close after answering.
            &begin_request_body(RESPONDER, self.config.keep_idle > 0),
            &mut request,
        );
        encode_params(env, &mut request);
        request
    }

    /// A new connection with the request's first bytes written on it.
    fn connect_and_send(&self, head: &[u8], call: &Call<'_>) -> Result<Stream, Failure> {
        let mut fresh = self.connect(call)?;
        write_all_ticking(&mut fresh, head, call.stop, call.deadline)
            .map_err(|e| call.write_failure(&self.label, e))?;
        Ok(fresh)
    }

    /// Whether [`Pool::check_in`] would keep a connection now, for a caller that must first
    /// turn it back into a blocking socket (three system calls spared when not).
    pub(super) fn wants_one(&self) -> bool {
        self.keeps_another(self.lock_idle().len())
    }

    /// Whether one more connection is kept beside `idle` idle ones: none while a request waits
    /// on a new connection's first answer (the worker this one holds may be the one it waits
    /// for), else up to `--upstream-keep`, or more while requests wait for a slot. Each of
    /// those takes one the moment this connection's slot frees, so keeping it for them is
    /// reuse, not a worker held idle; closing it would only make the next request open a new
    /// connection (and, while that waits for its first answer, close the next one that
    /// finishes: under a steady queue, a new connection per request).
    fn keeps_another(&self, idle: usize) -> bool {
        self.config.keep_idle > 0
            && self.waiting_on_new.load(Ordering::SeqCst) == 0
            && idle < self.config.keep_idle.max(self.in_use.waiting())
    }

    /// Keeps a connection whose request completed cleanly, when the pool wants it.
    pub(super) fn check_in(&self, stream: Stream) {
        let mut idle = self.lock_idle();
        if self.keeps_another(idle.len()) {
            idle.push(IdleConnection {
                stream,
                since: Instant::now(),
            });
        }
    }
}

/// What starting one request needs to know to give up in time, and to say why.
struct Call<'a> {
    deadline: Instant,
    abort: &'a AbortHandle,
    stop: &'a AtomicBool,
    script: &'a str,
    timeout: Duration,
}

impl Call<'_> {
    /// The failure for a write of the request that did not complete: the deadline, the
    /// client leaving, or the upstream's end of the connection.
    fn write_failure(&self, label: &str, error: io::Error) -> Failure {
        if self.abort.is_aborted() {
            Failure::Io(io::ErrorKind::ConnectionAborted.into())
        } else if Instant::now() >= self.deadline {
            Failure::Timeout {
                script: self.script.to_string(),
                after: self.timeout,
            }
        } else {
            Failure::UpstreamUnreachable {
                address: label.to_string(),
                reason: error.to_string(),
            }
        }
    }
}

/// Forwards requests to one upstream.
pub struct FastCgiBackend {
    pool: Arc<Pool>,
    retry_safe: bool,
}

/// What the feeder thread tells the run about the request body.
#[derive(Default)]
struct Feed {
    /// The whole body, and the empty record ending FCGI_STDIN, have been written.
    done: AtomicBool,
    /// Body bytes taken from the request so far.
    taken: AtomicU64,
    /// The request body has ended (whether or not its last records were written).
    source_ended: AtomicBool,
}

/// How long a retry waits for the feeder to see the end of an (empty) body.
const FEED_SETTLE: Duration = Duration::from_secs(1);

impl Backend for FastCgiBackend {
    fn kind(&self) -> &'static str {
        "fastcgi"
    }

    fn start(
        &self,
        call: &ScriptCall<'_>,
        input: Input,
        errors: &ErrorOutput,
        abort: &AbortHandle,
    ) -> Result<Box<dyn ScriptRun>, Failure> {
        let deadline = Instant::now() + call.timeout;
        let slot = self.pool.in_use.acquire()?;
        let request = self.pool.begin_and_params(call.env);
        let mut source: Option<Box<dyn Read + Send>> = match input {
            Input::Null => None,
            Input::Inherit => Some(Box::new(io::stdin())),
            Input::Stream(reader) => Some(reader),
        };
        let mut head = request.clone();
        // A request that announces no body (a GET: CONTENT_LENGTH empty or 0) needs no feeder
        // thread: its end is read here and goes out with the params. Should bytes come after
        // all, they go first and the feeder takes the rest.
        if source.is_some() && announces_no_body(call.env) {
            let mut first = [0u8; STDIN_CHUNK];
            let read = source.as_mut().map(|s| s.read(&mut first)).transpose();
            match read.map_err(|e| Failure::Io(e.kind().into()))? {
                Some(0) | None => source = None,
                Some(n) => encode_stream(STDIN, REQUEST_ID, &first[..n], &mut head),
            }
        }
        if source.is_none() {
            encode_stream(STDIN, REQUEST_ID, &[], &mut head);
        }
        let head = head.freeze();
        // A kept connection the upstream closed meanwhile fails on this first write: nothing
        // of the request has been taken yet, so a new connection is safe for any method.
        let stop = Arc::new(AtomicBool::new(false));
        let attempt = Call {
            deadline,
            abort,
            stop: &stop,
            script: call.script,
            timeout: call.timeout,
        };
        let kept = self.pool.take_idle().and_then(|mut kept| {
            write_all_ticking(&mut kept, &head, &stop, deadline)
                .ok()
                .map(|()| kept)
        });
        let reused = kept.is_some();
        // Counted before connecting, so a connection finishing meanwhile is closed for us.
        let waiting = (!reused).then(|| WaitingOnNew::new(&self.pool));
        let stream = match kept {
            Some(kept) => kept,
            None => self.pool.connect_and_send(&head, &attempt)?,
        };
        let mut run = FastCgiRun {
            pool: Arc::clone(&self.pool),
            reader: Some(stream),
            writer: None,
            inbuf: BytesMut::with_capacity(16 * 1024),
            pending: Bytes::new(),
            answered: false,
            stdout_ended: false,
            end: None,
            deadline,
            abort: abort.clone(),
            errors: errors.clone(),
            stop,
            feed: Arc::new(Feed::default()),
            retry: (self.retry_safe && reused).then_some(head),
            waiting_on_new: waiting,
            slot: Some(slot),
            ended: None,
            script: call.script.to_string(),
            timeout: call.timeout,
        };
        match source {
            None => {
                run.feed.source_ended.store(true, Ordering::SeqCst);
                run.feed.done.store(true, Ordering::SeqCst);
            }
            Some(source) => run.start_feeder(source)?,
        }
        Ok(Box::new(run))
    }

    /// A GET or HEAD announcing no body: the whole request is known before it goes, so its
    /// exchange (the slot, the connection, the response) can run on the front end's task
    /// ([`super::fastcgi_async`]). Not for a TCP upstream named by host name, whose lookup
    /// would block. Anything else starts as above.
    fn prefetch(&self, call: &ScriptCall<'_>) -> Option<Prefetch> {
        let connectable = match &self.pool.address {
            Address::Unix(_) => true,
            Address::Tcp(target) => target.parse::<std::net::SocketAddr>().is_ok(),
        };
        if !self.retry_safe || !connectable || !announces_no_body(call.env) {
            return None;
        }
        let mut head = self.pool.begin_and_params(call.env);
        encode_stream(STDIN, REQUEST_ID, &[], &mut head);
        Some(Prefetch::new(
            Arc::clone(&self.pool),
            head.freeze(),
            Instant::now() + call.timeout,
            call.script.to_string(),
            call.timeout,
        ))
    }
}

/// A request ready to go, with its slot: what [`Prefetch`] carries besides the connection.
pub(super) struct Ready {
    pub(super) pool: Arc<Pool>,
    /// BEGIN_REQUEST, the params and the empty FCGI_STDIN.
    pub(super) head: Bytes,
    pub(super) deadline: Instant,
    pub(super) slot: SlotGuard,
    pub(super) script: String,
    pub(super) timeout: Duration,
}

/// Where an exchange begun elsewhere ([`super::fastcgi_async`]) stands when a blocking run
/// takes it over: its connection, the bytes read past the last record handled, and whether
/// any record has come.
pub(super) struct Handover {
    pub(super) ready: Ready,
    /// The connection, if it is still usable; `None` after it failed (then only a retry).
    pub(super) stream: Option<Stream>,
    pub(super) inbuf: BytesMut,
    pub(super) answered: bool,
    /// The connection was kept from an earlier request (only then is a retry allowed).
    pub(super) reused: bool,
}

/// How a request ended, from FCGI_END_REQUEST's appStatus and protocolStatus.
pub(super) fn ended_from(app_status: u32, protocol_status: u8) -> Ended {
    match protocol_status {
        REQUEST_COMPLETE if app_status == 0 => Ended::Success,
        REQUEST_COMPLETE => Ended::Failed(format!("application status {app_status}")),
        OVERLOADED => Ended::Refused("the application is overloaded".into()),
        CANT_MPX_CONN => Ended::Refused("the application cannot take the request".into()),
        other => Ended::Failed(format!("protocol status {other}")),
    }
}

/// The run's error when the upstream's connection failed after the response began. The
/// operator's log names the upstream; the client never sees this text.
pub(super) fn cut_short(label: &str, reason: &str) -> RunError {
    RunError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("upstream {label}: {reason} before FCGI_END_REQUEST"),
    ))
}

/// A blocking run that carries on from a [`Handover`]: reads continue on its connection, or,
/// when it failed before any answer, the request is sent again on a new one (a GET or HEAD).
pub(super) fn resume(handover: Handover, errors: &ErrorOutput, abort: &AbortHandle) -> FastCgiRun {
    let Handover {
        ready,
        stream,
        inbuf,
        answered,
        reused,
    } = handover;
    let feed = Feed::default();
    feed.source_ended.store(true, Ordering::SeqCst);
    feed.done.store(true, Ordering::SeqCst);
    FastCgiRun {
        pool: ready.pool,
        reader: stream,
        writer: None,
        inbuf,
        pending: Bytes::new(),
        answered,
        stdout_ended: false,
        end: None,
        deadline: ready.deadline,
        abort: abort.clone(),
        errors: errors.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        feed: Arc::new(feed),
        retry: (reused && !answered).then_some(ready.head),
        waiting_on_new: None,
        slot: Some(ready.slot),
        ended: None,
        script: ready.script,
        timeout: ready.timeout,
    }
}

/// Whether the request's CONTENT_LENGTH says it has no body (absent, empty or 0).
fn announces_no_body(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let announced = env.iter().rev().find(|(name, _)| name == "CONTENT_LENGTH");
    crate::request::no_body_announced(announced.map(|(_, value)| value.as_bytes()))
}

/// Encodes the environment as FCGI_PARAMS records, ended by an empty one. Pairs are packed
/// whole into each record: php-fpm parses every record on its own, so a pair cut across two
/// is lost (FastCGI 1.0 §3.4 allows it; nginx never does it either). Only a pair longer than
/// one record is split.
fn encode_params(env: &[(std::ffi::OsString, std::ffi::OsString)], out: &mut BytesMut) {
    use std::os::unix::ffi::OsStrExt;
    let mut record = BytesMut::new();
    for (name, value) in env {
        let mut pair = BytesMut::new();
        encode_pairs(&[(name.as_bytes(), value.as_bytes())], &mut pair);
        if record.len() + pair.len() > MAX_CONTENT_LEN && !record.is_empty() {
            encode_stream(PARAMS, REQUEST_ID, &record, out);
            record.clear();
        }
        record.extend_from_slice(&pair);
    }
    if !record.is_empty() {
        encode_stream(PARAMS, REQUEST_ID, &record, out);
    }
    encode_stream(PARAMS, REQUEST_ID, &[], out);
}

/// One request in flight on one connection.
pub(super) struct FastCgiRun {
    pool: Arc<Pool>,
    /// The connection; taken when it is checked back into the pool.
    reader: Option<Stream>,
    /// The feeder's half, shared so an abort record never lands inside a STDIN record.
    writer: Option<Arc<Mutex<Stream>>>,
    inbuf: BytesMut,
    /// FCGI_STDOUT content received and not yet read.
    pending: Bytes,
    /// Any record of the response has arrived.
    answered: bool,
    stdout_ended: bool,
    /// FCGI_END_REQUEST: (appStatus, protocolStatus).
    end: Option<(u32, u8)>,
    deadline: Instant,
    abort: AbortHandle,
    errors: ErrorOutput,
    /// Tells the feeder to give up.
    stop: Arc<AtomicBool>,
    feed: Arc<Feed>,
    /// The request's first bytes, while a retry on a new connection is still allowed.
    retry: Option<Bytes>,
    /// Held while this request, on a new connection, has no answer yet.
    waiting_on_new: Option<WaitingOnNew>,
    /// The pool's slot, released once the connection is checked in or closed.
    slot: Option<SlotGuard>,
    /// How the run ended, once `wait` has seen it (a second `wait` answers the same).
    ended: Option<Ended>,
    /// The script's name and time limit, for errors.
    script: String,
    timeout: Duration,
}

/// Counts one request waiting for the first answer on a new connection (see
/// `Pool::waiting_on_new`), for as long as it is held.
pub(super) struct WaitingOnNew {
    pool: Arc<Pool>,
}

impl WaitingOnNew {
    pub(super) fn new(pool: &Arc<Pool>) -> Self {
        pool.waiting_on_new.fetch_add(1, Ordering::SeqCst);
        WaitingOnNew {
            pool: Arc::clone(pool),
        }
    }
}

impl Drop for WaitingOnNew {
    fn drop(&mut self) {
        self.pool.waiting_on_new.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FastCgiRun {
    fn start_feeder(&mut self, mut source: Box<dyn Read + Send>) -> Result<(), Failure> {
        let cloned = self.reader().and_then(|s| s.try_clone());
        let writer = Arc::new(Mutex::new(cloned.map_err(|e| {
            Failure::UpstreamUnreachable {
                address: self.pool.label.clone(),
                reason: e.to_string(),
            }
        })?));
        self.writer = Some(Arc::clone(&writer));
        let stop = Arc::clone(&self.stop);
        let feed = Arc::clone(&self.feed);
        let deadline = self.deadline;
        let spawned = std::thread::Builder::new()
            .name("upstream-stdin".into())
            .spawn(move || {
                let mut buf = vec![0u8; STDIN_CHUNK];
                let mut records = BytesMut::new();
                loop {
                    let n = match source.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // The client's body failed: the front end aborts the request.
                        Err(_) => return,
                    };
                    feed.taken.fetch_add(n as u64, Ordering::SeqCst);
                    if n == 0 {
                        feed.source_ended.store(true, Ordering::SeqCst);
                    }
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    records.clear();
                    encode_stream(STDIN, REQUEST_ID, &buf[..n], &mut records);
                    let mut stream = writer.lock().unwrap_or_else(|p| p.into_inner());
                    if write_all_ticking(&mut stream, &records, &stop, deadline).is_err() {
                        return;
                    }
                    if n == 0 {
                        feed.done.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            });
        spawned.map(drop).map_err(|e| Failure::UpstreamUnreachable {
            address: self.pool.label.clone(),
            reason: format!("no thread for the request body: {e}"),
        })
    }

    /// Reads until one record of ours has been handled.
    fn next_record(&mut self) -> Result<(), RunError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let record = take_record(&mut self.inbuf)
                .map_err(|e| RunError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            if let Some((record_type, id, content)) = record {
                if id == REQUEST_ID {
                    self.on_record(record_type, content);
                    return Ok(());
                }
                continue;
            }
            if self.abort.is_aborted() {
                self.kill();
                return Err(RunError::Aborted);
            }
            if Instant::now() >= self.deadline {
                self.kill();
                return Err(RunError::Timeout);
            }
            match self.reader().and_then(|s| s.read(&mut chunk)) {
                Ok(0) => self.retry_or_fail("the upstream closed the connection")?,
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if is_tick(&e) => {}
                Err(e) => self.retry_or_fail(&e.to_string())?,
            }
        }
    }

    fn on_record(&mut self, record_type: u8, content: Bytes) {
        if !self.answered {
            self.answered = true;
            self.retry = None;
            self.waiting_on_new = None;
        }
        match record_type {
            STDOUT if content.is_empty() => self.stdout_ended = true,
            STDOUT => self.pending = content,
            STDERR if !content.is_empty() => self.errors.write(&content),
            END_REQUEST => {
                // A malformed end record still ends the request, as a failure.
                self.end =
                    Some(parse_end_request(&content).unwrap_or((u32::MAX, REQUEST_COMPLETE)));
            }
            _ => {}
        }
    }

    /// A kept connection that failed before any answer: send the request once more on a new
    /// connection, when nothing of the body has been taken (a GET or HEAD). Otherwise the
    /// connection's failure is the run's.
    fn retry_or_fail(&mut self, reason: &str) -> Result<(), RunError> {
        let fail = || cut_short(&self.pool.label, reason);
        let Some(head) = self.retry.take() else {
            return Err(fail());
        };
        // The feeder may not have seen the end of an empty body yet; a body with bytes in it
        // can never be sent again.
        let settle = self.deadline.min(Instant::now() + FEED_SETTLE);
        while !self.feed.source_ended.load(Ordering::SeqCst)
            && self.feed.taken.load(Ordering::SeqCst) == 0
            && Instant::now() < settle
            && !self.abort.is_aborted()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let body_safe = self.feed.source_ended.load(Ordering::SeqCst)
            && self.feed.taken.load(Ordering::SeqCst) == 0;
        if !body_safe {
            return Err(fail());
        }
        let mut resend = BytesMut::from(&head[..]);
        if self.writer.is_some() {
            // The body was empty: its end record goes with the rest this time.
            encode_stream(STDIN, REQUEST_ID, &[], &mut resend);
        }
        // The old feeder's writes went to the dead connection; this one carries the whole
        // request, so the feed is done whatever became of them.
        self.stop.store(true, Ordering::SeqCst);
        self.stop = Arc::new(AtomicBool::new(false));
        self.waiting_on_new = Some(WaitingOnNew::new(&self.pool));
        let call = Call {
            deadline: self.deadline,
            abort: &self.abort,
            stop: &self.stop,
            script: &self.script,
            timeout: self.timeout,
        };
        let fresh = self
            .pool
            .connect_and_send(&resend, &call)
            .map_err(|failure| {
                RunError::Io(io::Error::other(format!("{reason}; then: {failure}")))
            })?;
        self.reader = Some(fresh);
        self.writer = None;
        self.feed.done.store(true, Ordering::SeqCst);
        self.inbuf.clear();
        Ok(())
    }

    /// Sends FCGI_ABORT_REQUEST when no STDIN record is being written, then closes.
    fn send_abort(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut record = BytesMut::new();
        encode_stream(ABORT_REQUEST, REQUEST_ID, &[], &mut record);
        let quick = Instant::now() + TICK * 4;
        let never = AtomicBool::new(false);
        match &self.writer {
            Some(writer) => {
                if let Ok(mut stream) = writer.try_lock() {
                    let _ = write_all_ticking(&mut stream, &record, &never, quick);
                }
            }
            None => {
                if let Some(reader) = self.reader.as_mut() {
                    let _ = write_all_ticking(reader, &record, &never, quick);
                }
            }
        }
        if let Some(reader) = &self.reader {
            reader.shutdown();
        }
    }

    /// The connection, while this run has it.
    fn reader(&mut self) -> io::Result<&mut Stream> {
        self.reader
            .as_mut()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    fn finished_cleanly(&self) -> bool {
        self.end
            .is_some_and(|(app, protocol)| app == 0 && protocol == REQUEST_COMPLETE)
            && self.feed.done.load(Ordering::SeqCst)
            && self.inbuf.is_empty()
    }
}

impl ScriptRun for FastCgiRun {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, RunError> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                bytes::Buf::advance(&mut self.pending, n);
                return Ok(n);
            }
            if self.stdout_ended || self.end.is_some() {
                return Ok(0);
            }
            self.next_record()?;
        }
    }

    fn wait(&mut self) -> Result<Ended, RunError> {
        if let Some(ended) = &self.ended {
            return Ok(ended.clone());
        }
        while self.end.is_none() {
            self.pending = Bytes::new();
            self.next_record()?;
        }
        let Some((app_status, protocol_status)) = self.end else {
            return Err(RunError::Aborted);
        };
        let ended = ended_from(app_status, protocol_status);
        // The connection itself goes back to the pool, not a duplicate of it: no dup(2) and
        // close(2) per request.
        if self.finished_cleanly()
            && let Some(kept) = self.reader.take()
        {
            self.writer = None;
            self.pool.check_in(kept);
        } else if let Some(reader) = &self.reader {
            reader.shutdown();
        }
        // Only now, with the connection kept or closed, may another request take its place.
        self.slot = None;
        self.ended = Some(ended.clone());
        Ok(ended)
    }

    fn kill(&mut self) {
        if self.end.is_none() {
            self.send_abort();
            self.end = Some((u32::MAX, REQUEST_COMPLETE));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.slot = None;
    }
}

impl Drop for FastCgiRun {
    fn drop(&mut self) {
        if self.end.is_none() {
            self.send_abort();
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unix_paths_or_host_and_port() {
        assert_eq!(
            Address::parse("unix:/run/php/php8.2-fpm.sock"),
            Some(Address::Unix("/run/php/php8.2-fpm.sock".into()))
        );
        assert_eq!(
            Address::parse("127.0.0.1:9000"),
            Some(Address::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            Address::parse("[::1]:9000"),
            Some(Address::Tcp("[::1]:9000".into()))
        );
        for bad in ["unix:", "localhost", ":9000", "host:port", "host:70000", ""] {
            assert_eq!(Address::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn params_never_cut_a_pair_across_records() {
        let big = "v".repeat(40_000);
        let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = (0..5)
            .map(|i| (format!("NAME_{i}").into(), big.clone().into()))
            .collect();
        let mut out = BytesMut::new();
        encode_params(&env, &mut out);
        let mut seen = 0;
        let mut ended = false;
        while let Some((record_type, id, content)) = take_record(&mut out).unwrap() {
            assert_eq!((record_type, id), (PARAMS, REQUEST_ID));
            if content.is_empty() {
                ended = true;
                continue;
            }
            // Each record holds whole pairs only.
            let pairs = crate::fastcgi_protocol::decode_pairs(&content).unwrap();
            seen += pairs.len();
        }
        assert!(ended);
        assert_eq!(seen, 5);
    }
}
