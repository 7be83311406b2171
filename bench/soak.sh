#!/usr/bin/env bash
# Soak (not a timed test): REQUESTS (default 100000) requests against `http-conditional serve`
# and against `http-conditional fastcgi` behind nginx, each a mix of 304 and 412 answered
# without running the page, 200 (the page runs), 502 (a script that fails), 504 (a script
# past its timeout), clients that leave mid-request, uploads trickled in pieces (by
# Content-Length and chunked), 100 KB uploads (past serve's memory buffer: a temp file),
# half-sent heads abandoned, and SILENT (default 50) connections that say nothing for the
# whole run. Reports the descriptors, threads and RSS of the http-conditional process before
# and after (they should be flat), and the responses whose status was not the one expected
# (should be 0). 127.0.0.1 and unix sockets only; each phase is bounded by PHASE_LIMIT
# seconds (default 900). Prints a markdown section on stdout.
# PROFILE=debug uses the debug build instead of building a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source bench/lib.sh
bench_need nginx:nginx curl:curl python3:python3
requests=${REQUESTS:-100000}
silent=${SILENT:-50}
concurrency=${CONCURRENCY:-32}
phase_limit=${PHASE_LIMIT:-900}
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
bin=${CARGO_TARGET_DIR:-$repo/target}/$profile/http-conditional

work=$(mktemp -d /tmp/hc-bench-soak.XXXXXX)
chmod 755 "$work"
cleanup() { bench_stop_all; rm -rf "$work"; }
trap cleanup EXIT
port_of() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fail() { echo "bench/soak.sh: $*" >&2; exit 1; }

# The pages: the 20 KB page of the other benchmarks (declared), one that fails, one that
# outlives its 0.2 s timeout.
mkdir -p "$work"/{www,run,nginx/tmp}
bench_write_page "$work/www"
printf '#!/bin/sh\necho failing >&2\nexit 1\n' > "$work/www/fail.cgi"
printf '#!/bin/sh\nexec sleep 5\n' > "$work/www/slow.cgi"
echo '{"timeout": 0.2}' > "$work/www/slow.cgi.conditional.json"
chmod 755 "$work/www/fail.cgi" "$work/www/slow.cgi"

# serve.
serve_port=$(port_of)
bench_start "$bin" serve --root "$work/www" --listen "127.0.0.1:$serve_port" 2>"$work/serve.log"
serve_pid=${bench_pids[-1]}

# fastcgi behind nginx, with the shipped server block (paths and port replaced).
# As root the responder runs scripts only as the user --user names: here root itself.
as_user=()
if [ "$(id -u)" = 0 ]; then as_user=(--user root); fi
bench_start "$bin" fastcgi --root "$work/www" --listen "unix:$work/run/hc.sock" "${as_user[@]}" 2>"$work/fastcgi.log"
fastcgi_pid=${bench_pids[-1]}
for _ in $(seq 100); do [ -S "$work/run/hc.sock" ] && break; sleep 0.05; done
nginx_port=$(port_of)
bench_shipped_nginx_block "$work/nginx" "$nginx_port" "$work/run/hc.sock" "$work/www"
user_line=
if [ "$(id -u)" = 0 ]; then user_line='user root;'; fi
cat > "$work/nginx/nginx.conf" <<EOF
$user_line
worker_processes 2;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    proxy_temp_path $work/nginx/tmp/proxy;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    include $work/nginx/http-conditional.conf;
}
EOF
bench_start nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" \
  -g "daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;"

for port in "$serve_port" "$nginx_port"; do
  ok=
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/page.cgi")" = 200 ] && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || fail "nothing answers on port $port"
done

# The load: an asyncio client on raw sockets, so it can trickle, abort and stay silent.
cat > "$work/soak.py" <<'PY'
import asyncio, json, sys

port, total, silent, concurrency = (int(a) for a in sys.argv[1:5])
HOST = "127.0.0.1"

async def read_response(reader):
    """Status, headers and body of one response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0][9:12])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if status in (204, 304):
        return status, headers
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers

def head(method, path, extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: soak\r\n{extra}\r\n".encode()

async def etag():
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(head("GET", "/page.cgi", "Connection: close\r\n"))
    _, headers = await read_response(reader)
    writer.close()
    return headers["etag"]

# Kinds of request, in a cycle of 100: (count, name, expected status or None for aborts).
MIX = [(58, "304"), (2, "large"), (8, "412"), (6, "200"), (4, "502"), (1, "504"), (4, "abort"),
       (8, "trickle"), (5, "chunked"), (4, "half-head")]
CYCLE = [name for count, name in MIX for _ in range(count)]
EXPECTED = {"304": 304, "412": 412, "200": 200, "502": 502, "504": 504,
            "trickle": 412, "chunked": 412, "large": 412}

async def main():
    tag = await etag()
    counts = {name: 0 for _, name in MIX}
    unexpected = {}
    silent_conns = []
    for _ in range(silent):
        _, writer = await asyncio.open_connection(HOST, port)
        silent_conns.append(writer)
    queue = iter(range(total))

    async def one(name, conn):
        """Sends one request of kind `name` on conn (reader, writer) or a new connection;
        returns the connection to keep, or None."""
        if name in ("abort", "half-head"):
            reader, writer = await asyncio.open_connection(HOST, port)
            if name == "abort":  # asks for the page, leaves before the answer
                writer.write(head("GET", "/page.cgi"))
            else:  # half a head, then gone
                writer.write(b"GET /page.cgi HTTP/1.1\r\nHost: soak\r\nX-Half: ")
            await writer.drain()
            await asyncio.sleep(0.005)
            writer.transport.abort()
            return conn
        if conn is None:
            conn = await asyncio.open_connection(HOST, port)
        reader, writer = conn
        if name == "304":
            writer.write(head("GET", "/page.cgi", f"If-None-Match: {tag}\r\n"))
        elif name == "412":
            writer.write(head("POST", "/page.cgi", 'If-Match: "other"\r\nContent-Length: 5\r\n') + b"hello")
        elif name == "200":
            writer.write(head("GET", "/page.cgi"))
        elif name == "502":
            writer.write(head("GET", "/fail.cgi"))
        elif name == "504":
            writer.write(head("GET", "/slow.cgi"))
        elif name == "trickle":
            body = b"x" * 2000
            writer.write(head("POST", "/page.cgi", f"If-None-Match: {tag}\r\nContent-Length: {len(body)}\r\n"))
            for i in range(0, len(body), 500):
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(body[i:i + 500])
        elif name == "large":  # past serve's 64 KiB in memory: a temp file
            body = b"z" * 100_000
            writer.write(head("POST", "/page.cgi", f"If-None-Match: {tag}\r\nContent-Length: {len(body)}\r\n") + body)
        elif name == "chunked":
            writer.write(head("PUT", "/page.cgi", f"If-None-Match: {tag}\r\nTransfer-Encoding: chunked\r\n"))
            for piece in (b"a" * 700, b"b" * 700):
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        status, headers = await read_response(reader)
        if status != EXPECTED[name]:
            key = f"{name}->{status}"
            unexpected[key] = unexpected.get(key, 0) + 1
        if headers.get("connection", "").lower() == "close":
            writer.close()
            return None
        return conn

    async def worker():
        conn = None
        for i in queue:
            name = CYCLE[(i * 37) % len(CYCLE)]
            counts[name] += 1
            try:
                conn = await asyncio.wait_for(one(name, conn), 30)
            except Exception as e:
                key = f"{name}->{type(e).__name__}"
                unexpected[key] = unexpected.get(key, 0) + 1
                if conn is not None:
                    conn[1].transport.abort()
                conn = None
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    for writer in silent_conns:
        writer.transport.abort()
    print(json.dumps({"counts": counts, "unexpected": unexpected}))

asyncio.run(main())
PY

fds() { ls "/proc/$1/fd" | wc -l; }
threads() { sed -n 's/^Threads:[[:space:]]*//p' "/proc/$1/status"; }
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
figures() { echo "$(fds "$1") $(threads "$1") $(rss "$1")"; }

# Runs the load against PORT and measures PID: sets BEFORE, AFTER, RESULT, SECONDS_TAKEN.
phase() {
  local port=$1 pid=$2 start
  # Warm-up, then the "before" figures: the pools have their steady size.
  timeout 120 python3 "$work/soak.py" "$port" 2000 0 "$concurrency" >/dev/null
  sleep 12  # tokio's idle blocking threads leave after 10 s
  BEFORE=$(figures "$pid")
  start=$(date +%s)
  RESULT=$(timeout "$phase_limit" python3 "$work/soak.py" "$port" "$requests" "$silent" "$concurrency") \
    || fail "the load on port $port did not finish within $phase_limit s"
  SECONDS_TAKEN=$(( $(date +%s) - start ))
  sleep 12
  kill -0 "$pid" || fail "process $pid died"
  AFTER=$(figures "$pid")
}

echo "bench/soak.sh: $requests requests against serve, then nginx → fastcgi" >&2
phase "$serve_port" "$serve_pid"
serve_before=$BEFORE; serve_after=$AFTER; serve_result=$RESULT; serve_secs=$SECONDS_TAKEN
phase "$nginx_port" "$fastcgi_pid"
fcgi_before=$BEFORE; fcgi_after=$AFTER; fcgi_result=$RESULT; fcgi_secs=$SECONDS_TAKEN

row() {  # label "fds threads rss" "fds threads rss" result seconds
  python3 - "$@" <<'PY'
import json, sys
label, before, after, result, secs = sys.argv[1:]
b, a = before.split(), after.split()
r = json.loads(result)
bad = sum(r["unexpected"].values())
detail = ", ".join(f"{k} {v}" for k, v in sorted(r["unexpected"].items())) or "none"
print(f"| {label} | {sum(r['counts'].values())} in {secs} s | {b[0]} → {a[0]} | {b[1]} → {a[1]} | "
      f"{int(b[2]) / 1024:.1f} → {int(a[2]) / 1024:.1f} | {bad} ({detail}) |")
PY
}
mix=$(python3 -c "import json, sys; c = json.loads(sys.argv[1])['counts']; print(', '.join(f'{k} {v}' for k, v in c.items()))" "$serve_result")

cat <<EOF
## Soak (bench/soak.sh)

$requests requests per front end from $concurrency asyncio clients on 127.0.0.1, $(nproc) cores,
$profile build, nginx $(nginx -v 2>&1 | sed 's#.*/##'), with $silent connections silent for the
whole run. Mix: $mix (abort: the client leaves before the answer; trickle: a 2000-byte body
in four pieces 10 ms apart; chunked: a chunked body in two pieces; half-head: half a request
head, then gone; large: a 100 KB body, past serve's memory buffer). Figures of the http-conditional process, after a warm-up and 12 s after the
run (tokio's idle threads leave after 10 s).

| Front end | Requests | Descriptors | Threads | RSS MiB | Unexpected statuses |
|---|---|---|---|---|---|
$(row "serve" "$serve_before" "$serve_after" "$serve_result" "$serve_secs")
$(row "nginx → fastcgi" "$fcgi_before" "$fcgi_after" "$fcgi_result" "$fcgi_secs")
EOF
