//! `probe_ttl`: probe answers reused for a while per script, query string and PATH_INFO, and
//! concurrent cold requests for one key sharing one probe run (single flight), so a burst of
//! requests after a change starts the probe once, not once per request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Keys held at most; past it, expired answers go first, then the soonest to expire.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What a probe answer is reused for: the same script, query string and PATH_INFO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    /// The script's real path.
    pub script: PathBuf,
    /// The raw query string.
    pub query: Vec<u8>,
    /// PATH_INFO.
    pub path_info: Vec<u8>,
}

/// How an answer was obtained (for the metrics: probe runs and probe cache hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// This caller ran the probe.
    Ran,
    /// A stored answer, still fresh.
    Cached,
    /// Another caller's run, waited for.
    Shared,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError<E> {
    /// This caller ran the probe and it failed.
    #[error(transparent)]
    Failed(E),
    /// The run this caller waited for failed (its caller has the error).
    #[error("the probe run this request waited for failed")]
    SharedRunFailed,
    /// The run this caller waited for did not finish within the wait.
    #[error("the probe run this request waited for took longer than {0:?}")]
    WaitTimedOut(Duration),
}

/// The cache, generic over the answer (a `SystemTime` for the engine).
#[derive(Debug)]
pub struct ProbeCache<V> {
    entries: Mutex<HashMap<ProbeKey, Entry<V>>>,
    capacity: usize,
}

#[derive(Debug)]
enum Entry<V> {
    Fresh { value: V, until: Instant },
    Running(Arc<Flight<V>>),
}

/// One probe run in progress; waiters sleep on `done` until `result` is set.
#[derive(Debug)]
struct Flight<V> {
    result: Mutex<Option<Option<V>>>,
    done: Condvar,
}

impl<V: Clone> Default for ProbeCache<V> {
    fn default() -> Self {
        ProbeCache::new(DEFAULT_CAPACITY)
    }
}

impl<V: Clone> ProbeCache<V> {
    /// A cache of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        ProbeCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key`: a fresh stored one, the one a run in flight gives (waiting at most
    /// `wait`, the probe's own timeout), or `probe`'s, stored for `ttl` when it succeeds. A zero
    /// `ttl` runs `probe` with no caching and no sharing.
    pub fn get_or_run<E>(
        &self,
        key: &ProbeKey,
        ttl: Duration,
        wait: Duration,
        probe: impl FnOnce() -> Result<V, E>,
    ) -> Result<(V, Served), ProbeError<E>> {
        self.get_or_run_at(key, ttl, wait, Instant::now, probe)
    }

    fn get_or_run_at<E>(
        &self,
        key: &ProbeKey,
        ttl: Duration,
        wait: Duration,
        now: impl Fn() -> Instant,
        probe: impl FnOnce() -> Result<V, E>,
    ) -> Result<(V, Served), ProbeError<E>> {
        if ttl.is_zero() {
            return probe()
                .map(|v| (v, Served::Ran))
                .map_err(ProbeError::Failed);
        }
        let flight = {
            let mut entries = self.lock();
            match entries.get(key) {
                Some(Entry::Fresh { value, until }) if *until > now() => {
                    return Ok((value.clone(), Served::Cached));
                }
                Some(Entry::Running(flight)) => {
                    let flight = Arc::clone(flight);
                    drop(entries);
                    return wait_for(&flight, wait).map(|v| (v, Served::Shared));
                }
                _ => {}
            }
            if !entries.contains_key(key) && !make_room(&mut entries, self.capacity, now()) {
                // Every slot holds a run in flight: run unshared rather than grow unbounded.
                drop(entries);
                return probe()
                    .map(|v| (v, Served::Ran))
                    .map_err(ProbeError::Failed);
            }
            let flight = Arc::new(Flight {
                result: Mutex::new(None),
                done: Condvar::new(),
            });
            entries.insert(key.clone(), Entry::Running(Arc::clone(&flight)));
            flight
        };
        // Whatever happens to the probe (even a panic), the waiters are released and the key
        // no longer says "running".
        let mut landing = Landing {
            cache: self,
            key,
            flight: &flight,
            stored: None,
        };
        let result = probe();
        if let Ok(value) = &result {
            landing.stored = Some((value.clone(), now() + ttl));
        }
        drop(landing);
        result.map(|v| (v, Served::Ran)).map_err(ProbeError::Failed)
    }

    /// Keys held (answers and runs in flight).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ProbeKey, Entry<V>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Frees one slot when the cache is full; `false` when every entry is a run in flight.
fn make_room<V>(entries: &mut HashMap<ProbeKey, Entry<V>>, capacity: usize, now: Instant) -> bool {
    if entries.len() < capacity {
        return true;
    }
    entries.retain(|_, e| !matches!(e, Entry::Fresh { until, .. } if *until <= now));
    if entries.len() < capacity {
        return true;
    }
    let soonest = entries
        .iter()
        .filter_map(|(k, e)| match e {
            Entry::Fresh { until, .. } => Some((*until, k)),
            Entry::Running(_) => None,
        })
        .min_by_key(|(until, _)| *until)
        .map(|(_, k)| k.clone());
    match soonest {
        Some(key) => {
            entries.remove(&key);
            true
        }
        None => false,
    }
}

fn wait_for<V: Clone, E>(flight: &Flight<V>, wait: Duration) -> Result<V, ProbeError<E>> {
    let result = flight.result.lock().unwrap_or_else(PoisonError::into_inner);
    let (result, _) = flight
        .done
        .wait_timeout_while(result, wait, |r| r.is_none())
        .unwrap_or_else(PoisonError::into_inner);
    match &*result {
        Some(Some(value)) => Ok(value.clone()),
        Some(None) => Err(ProbeError::SharedRunFailed),
        None => Err(ProbeError::WaitTimedOut(wait)),
    }
}

/// Ends a run: stores its answer (a failure is not stored), wakes the waiters.
struct Landing<'a, V: Clone> {
    cache: &'a ProbeCache<V>,
    key: &'a ProbeKey,
    flight: &'a Arc<Flight<V>>,
    stored: Option<(V, Instant)>,
}

impl<V: Clone> Drop for Landing<'_, V> {
    fn drop(&mut self) {
        let stored = self.stored.take();
        {
            let mut entries = self.cache.lock();
            // Only this run's own entry is replaced (a full cache may have evicted it).
            let ours = matches!(entries.get(self.key), Some(Entry::Running(f)) if Arc::ptr_eq(f, self.flight));
            if ours {
                match &stored {
                    Some((value, until)) => {
                        entries.insert(
                            self.key.clone(),
                            Entry::Fresh {
                                value: value.clone(),
                                until: *until,
                            },
                        );
                    }
                    None => {
                        entries.remove(self.key);
                    }
                }
            }
        }
        let mut result = self
            .flight
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *result = Some(stored.map(|(value, _)| value));
        self.flight.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    const TTL: Duration = Duration::from_secs(60);
    const WAIT: Duration = Duration::from_secs(600);

    fn key(query: &str) -> ProbeKey {
        ProbeKey {
            script: PathBuf::from("/srv/feed.cgi"),
            query: query.as_bytes().to_vec(),
            path_info: Vec::new(),
        }
    }

    /// How many holders the run in flight for `key` has (the map, the runner, each waiter).
    fn holders(cache: &ProbeCache<u64>, key: &ProbeKey) -> usize {
        match cache.lock().get(key) {
            Some(Entry::Running(flight)) => Arc::strong_count(flight),
            _ => 0,
        }
    }

    /// Spins until `ready`; a test whose other threads never get there fails instead of hanging.
    fn wait_until(ready: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(120);
        while !ready() {
            assert!(
                Instant::now() < give_up,
                "the other threads never got there"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn ten_concurrent_cold_requests_share_one_probe_run() {
        let cache = ProbeCache::<u64>::new(16);
        let runs = AtomicUsize::new(0);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let k = key("a=1");
        let answers = std::thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|_| {
                    s.spawn(|| {
                        cache.get_or_run(&k, TTL, WAIT, || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            // Held until every other request is waiting on this run.
                            let _ = gate.lock().unwrap().recv();
                            Ok::<_, ()>(42)
                        })
                    })
                })
                .collect();
            wait_until(|| holders(&cache, &k) == 11);
            release.send(()).unwrap();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|(v, _)| *v == 42));
        let ran = answers.iter().filter(|(_, s)| *s == Served::Ran).count();
        let shared = answers.iter().filter(|(_, s)| *s == Served::Shared).count();
        assert_eq!((ran, shared), (1, 9));
        let (v, served) = cache
            .get_or_run(&k, TTL, WAIT, || Err::<u64, ()>(()))
            .unwrap();
        assert_eq!((v, served), (42, Served::Cached));
    }

    #[test]
    fn answers_are_reused_per_key_until_the_ttl_passes() {
        let cache = ProbeCache::<u64>::new(16);
        let start = Instant::now();
        let clock = Mutex::new(start);
        let now = || *clock.lock().unwrap();
        let run = |v: u64| move || Ok::<_, ()>(v);
        let ttl = Duration::from_secs(5);
        let get = |k: &ProbeKey, v| cache.get_or_run_at(k, ttl, WAIT, now, run(v)).unwrap();
        assert_eq!(get(&key("a"), 1), (1, Served::Ran));
        assert_eq!(get(&key("a"), 2), (1, Served::Cached));
        assert_eq!(
            get(&key("b"), 3),
            (3, Served::Ran),
            "another query is another key"
        );
        let other_info = ProbeKey {
            path_info: b"/x".to_vec(),
            ..key("a")
        };
        assert_eq!(
            get(&other_info, 4),
            (4, Served::Ran),
            "PATH_INFO is part of the key"
        );
        *clock.lock().unwrap() = start + ttl;
        assert_eq!(get(&key("a"), 5), (5, Served::Ran), "expired");
    }

    #[test]
    fn a_failed_run_is_not_cached() {
        let cache = ProbeCache::<u64>::new(16);
        let failed = cache.get_or_run(&key("a"), TTL, WAIT, || Err::<u64, &str>("no"));
        assert!(matches!(failed, Err(ProbeError::Failed("no"))));
        assert!(cache.is_empty());
        let ok = cache
            .get_or_run(&key("a"), TTL, WAIT, || Ok::<_, &str>(7))
            .unwrap();
        assert_eq!(ok, (7, Served::Ran));
    }

    #[test]
    fn waiters_of_a_failed_run_fail_and_a_slow_run_bounds_the_wait() {
        let cache = ProbeCache::<u64>::new(16);
        let k = key("a");
        let (release, gate) = mpsc::channel::<bool>();
        let gate = Mutex::new(gate);
        std::thread::scope(|s| {
            let runner = s.spawn(|| {
                cache.get_or_run(&k, TTL, WAIT, || {
                    if gate.lock().unwrap().recv().unwrap_or(false) {
                        Ok(1)
                    } else {
                        Err("probe failed")
                    }
                })
            });
            // The runner's run is in flight (the map and the runner hold it) before the waiter comes.
            wait_until(|| holders(&cache, &k) == 2);
            let waiter = s.spawn(|| cache.get_or_run(&k, TTL, WAIT, || Ok::<_, &str>(2)));
            wait_until(|| holders(&cache, &k) == 3);
            // A third request with a tiny wait gives up while the run is still going.
            let impatient =
                cache.get_or_run(&k, TTL, Duration::from_millis(1), || Ok::<_, &str>(3));
            assert!(matches!(impatient, Err(ProbeError::WaitTimedOut(_))));
            release.send(false).unwrap();
            assert!(matches!(
                runner.join().unwrap(),
                Err(ProbeError::Failed("probe failed"))
            ));
            assert!(matches!(
                waiter.join().unwrap(),
                Err(ProbeError::SharedRunFailed)
            ));
        });
        assert!(cache.is_empty());
    }

    #[test]
    fn a_panicking_probe_releases_its_waiters() {
        let cache = ProbeCache::<u64>::new(16);
        let k = key("a");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.get_or_run(&k, TTL, WAIT, || -> Result<u64, ()> { panic!("probe bug") })
        }));
        assert!(result.is_err());
        assert!(cache.is_empty());
        assert_eq!(
            cache
                .get_or_run(&k, TTL, WAIT, || Ok::<_, ()>(1))
                .unwrap()
                .0,
            1
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ProbeCache::<u64>::new(3);
        for i in 0..10 {
            cache
                .get_or_run(&key(&i.to_string()), TTL, WAIT, || Ok::<_, ()>(i))
                .unwrap();
            assert!(cache.len() <= 3);
        }
        assert_eq!(
            cache
                .get_or_run(&key("9"), TTL, WAIT, || Ok::<_, ()>(0))
                .unwrap()
                .1,
            Served::Cached
        );
    }
}
