#!/usr/bin/env bash
# A per-request profile of the declared 304 in each mode: instructions (callgrind), system calls
# (strace -c) and, for CGI mode, page faults. The long-running modes are measured as the
# difference between two runs (SMALL and SMALL + N requests on one kept connection), so the
# start-up is not counted. Prints a markdown section on stdout. N (default 500); MODES (default
# "cgi fastcgi serve") picks the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source bench/lib.sh
bench_need valgrind:valgrind strace:strace /usr/bin/time:time curl:curl python3:python3
n=${N:-500}
modes=" ${MODES:-cgi fastcgi serve} "
small=10
target_dir=${CARGO_TARGET_DIR:-$repo/target}
cargo build --release --quiet
bin=$target_dir/release/http-conditional
# The static build, as scripts/package.sh makes it (the Debian package's binary).
if [[ $modes == *" cgi "* ]]; then
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --quiet --target x86_64-unknown-linux-gnu
fi
static_bin=$target_dir/x86_64-unknown-linux-gnu/release/http-conditional
work=$(mktemp -d /tmp/hc-bench-profile.XXXXXX)
chmod 755 "$work"
bench_pids=()
trap 'bench_stop_all; rm -rf "$work"' EXIT
mkdir -p "$work/www"
bench_write_page "$work/www"
page=$work/www/page.cgi
as_user=(); if [ "$(id -u)" = 0 ]; then as_user=(--user root); fi

# CGI mode's environment (not exported: the long-running modes must not see it).
cgi=(env GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 QUERY_STRING=
  "SCRIPT_FILENAME=$page")
etag=$("${cgi[@]}" "$bin" | tr -d '\r' | sed -n 's/^ETag: //p')
[ -n "$etag" ] || { echo "profile.sh: no ETag" >&2; exit 1; }

# Instructions of a callgrind output file (its `totals:` line).
instructions() { sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$1"; }
# System calls in an `strace -c` output file (its `total` line's calls column).
syscalls() { awk '$NF == "total" { print ($4 ~ /^[0-9]+$/) ? $4 : $3 }' "$1"; }
# The system calls of an `strace -c` file, most called first: "name×count, ...".
top_calls() {
  awk '/^-/ { on = !on; next } on && $NF != "total" { c = ($4 ~ /^[0-9]+$/) ? $4 : $3; print c, $NF }' "$1" |
    sort -rn | head -n "${2:-8}" | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }'
}
per() { python3 -c "import sys; print(f'{(int(sys.argv[1]) - int(sys.argv[2])) / int(sys.argv[3]):.0f}')" "$@"; }

# CGI mode: one 304 per process.
cgi_row() {
  local label=$1 program=$2
  [[ $modes == *" cgi "* ]] || return 0
  local run=("${cgi[@]}" "HTTP_IF_NONE_MATCH=$etag")
  "${run[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$program" >/dev/null 2>&1
  "${run[@]}" strace -c -f -o "$work/st.out" "$program" >/dev/null
  local faults
  faults=$("${run[@]}" /usr/bin/time -f '%R' "$program" 2>&1 >/dev/null | tail -n 1)
  echo "| $label | $(instructions "$work/cg.out") | $(syscalls "$work/st.out") | $faults | $(top_calls "$work/st.out") |"
}

# FastCGI: the responder on a unix socket, fed by bench/profile/fcgi_client.py.
fcgi_params=("SCRIPT_FILENAME=$page" REQUEST_METHOD=GET QUERY_STRING= SERVER_PROTOCOL=HTTP/1.1
  GATEWAY_INTERFACE=CGI/1.1 "HTTP_IF_NONE_MATCH=$etag" HTTP_HOST=localhost)
fastcgi_run() { # tool-args... ; requests
  local requests=$1; shift
  local sock=$work/hc-$requests.sock
  bench_start "$@" "$bin" fastcgi --root "$work/www" --listen "unix:$sock" "${as_user[@]}"
  local pid=${bench_pids[-1]}
  for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.05; done
  python3 bench/profile/fcgi_client.py "$sock" "$requests" "${fcgi_params[@]}"
  kill -TERM -- "-$pid"
  wait "$pid" 2>/dev/null || true
}
# serve: curl asks for the page N times on one kept connection.
serve_run() {
  local requests=$1; shift
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  bench_start "$@" "$bin" serve --root "$work/www" --listen "127.0.0.1:$port"
  local pid=${bench_pids[-1]}
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$port/page.cgi" && break; sleep 0.05; done
  local urls=()
  for _ in $(seq "$requests"); do urls+=("http://127.0.0.1:$port/page.cgi"); done
  # The readiness probe above was one request (a 200) of its own: both runs have it.
  curl -s -o /dev/null -H "If-None-Match: $etag" "${urls[@]}"
  kill -TERM -- "-$pid"
  wait "$pid" 2>/dev/null || true
}
long_row() {
  local label=$1 runner=$2
  [[ $modes == *" ${runner%_run} "* ]] || return 0
  "$runner" "$small" valgrind --tool=callgrind --callgrind-out-file="$work/cg-small.out" 2>/dev/null
  "$runner" "$((small + n))" valgrind --tool=callgrind --callgrind-out-file="$work/cg-big.out" 2>/dev/null
  "$runner" "$small" strace -c -f -o "$work/st-small.out"
  "$runner" "$((small + n))" strace -c -f -o "$work/st-big.out"
  local ins calls
  ins=$(per "$(instructions "$work/cg-big.out")" "$(instructions "$work/cg-small.out")" "$n")
  calls=$(per "$(syscalls "$work/st-big.out")" "$(syscalls "$work/st-small.out")" "$n")
  echo "| $label | $ins | $calls | – | $(top_calls "$work/st-big.out") (in $((small + n)) requests) |"
}

rows=$(
  cgi_row "CGI mode, \`cargo build --release\`" "$bin"
  cgi_row "CGI mode, static (the Debian package's build)" "$static_bin"
  cgi_row "\`/bin/true\` (for scale)" /bin/true
  long_row "FastCGI responder, per request" fastcgi_run
  long_row "serve, per request" serve_run
)
cat <<MD
## Profile of one declared 304 per mode (bench/profile.sh)

valgrind --tool=callgrind (instructions) and strace -c -f (system calls), $(nproc) cores. CGI
mode: one process, start-up included (that is the request), minor page faults from
/usr/bin/time. FastCGI and serve: (run of $((small + n)) requests − run of $small) / $n, on
one kept connection, no web server in front.

| mode | instructions | system calls | page faults | system calls by name |
|---|---:|---:|---:|---|
$rows
MD
