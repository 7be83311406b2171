#!/usr/bin/env bash
# `serve` under load with wrk: the 304 path (If-None-Match matching, the script does not run)
# and the 200 path (the script runs), on the same 20 KB sh page as bench/cgi.sh.
# Prints a markdown section on stdout. DURATION (default 5s), CONNECTIONS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_need wrk:wrk curl:curl python3:python3
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/http-conditional
duration=${DURATION:-5s}
connections=${CONNECTIONS:-16}
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A 20 KB sh page, declared with a sidecar (the same page as bench/cgi.sh).
bench_write_page "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --root "$work" --listen "127.0.0.1:$port" 2>"$work/serve.log" &
server=$!
url=http://127.0.0.1:$port/page.cgi
for _ in $(seq 100); do curl -s -o /dev/null "$url" && break; sleep 0.05; done

etag=$(curl -s -D - -o /dev/null "$url" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$url")" = 304 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]

# wrk's summary → "requests/s p50 p99 non-2xx/3xx errors".
run_wrk() {
  local out
  out=$(wrk -t2 -c"$connections" -d"$duration" --latency "$@" "$url")
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    /Socket errors:/ { errs = $0 }
    END { printf "%s %s %s %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }' <<<"$out"
}
read -r rps304 p50_304 p99_304 bad304 < <(run_wrk -H "If-None-Match: $etag")
read -r rps200 p50_200 p99_200 bad200 < <(run_wrk)
runs=$(grep -c ' 200 \[ran script\]' "$work/serve.log" || true)

cat <<MD
## serve (bench/serve.sh)

wrk -t2 -c$connections -d$duration against \`http-conditional serve\` (release build) on 127.0.0.1,
one run on this machine ($(nproc) cores), the 20 KB sh page of bench/cgi.sh with \`{"cache_seconds": 0}\`.

| path | requests/s | p50 latency | p99 latency | non-2xx/3xx |
|---|---|---|---|---|
| 304 (If-None-Match matches; the script does not run) | $rps304 | $p50_304 | $p99_304 | $bad304 |
| 200 (the script runs; 20 KB body) | $rps200 | $p50_200 | $p99_200 | $bad200 |

Each 200 starts \`/bin/sh\` (the server logged $runs script runs in all); the 304 path starts nothing.

MD
