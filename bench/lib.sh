# Shared by the benchmark scripts: `source bench/lib.sh`.

# Installs the Debian packages that provide missing commands: bench_need cmd:package ...
bench_need() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Prints the benchmark page: a 20 KB HTML page from a sh heredoc. Extra arguments are header
# lines the page prints before the blank line (e.g. its own Last-Modified for Apache's 304).
bench_page() {
  echo '#!/bin/sh'
  echo "printf 'Content-Type: text/html; charset=utf-8\\n'"
  for header in "$@"; do printf "printf '%s\\\\n'\n" "$header"; done
  echo "printf '\\n'"
  echo "cat <<'HTML'"
  for _ in $(seq 400); do echo '<p>The same twenty kilobytes as the shell page.</p>'; done
  echo 'HTML'
}

# Writes the page as DIR/page.cgi (executable, mtime 2023-11-14) with the sidecar that declares
# it, unless NO_SIDECAR is set; extra arguments as for bench_page.
bench_write_page() {
  local dir=$1; shift
  bench_page "$@" > "$dir/page.cgi"
  chmod 755 "$dir/page.cgi"
  touch -d @1700000000 "$dir/page.cgi"
  [ -n "${NO_SIDECAR:-}" ] || echo '{"cache_seconds": 0}' > "$dir/page.cgi.conditional.json"
}

# A / B with DECIMALS (default 2) decimals; n/a when B is 0.
ratio() {
  python3 -c "import sys; a, b, d = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]); print(f'{a / b:.{d}f}' if b else 'n/a')" "$1" "$2" "${3:-2}"
}

# "met" when RATIO >= TARGET, else "NOT met".
verdict() { bench_verdict "$@"; }
bench_verdict() {
  python3 -c "import sys; r, t = sys.argv[1:]; print('met' if r != 'n/a' and float(r) >= float(t) else 'NOT met')" "$1" "$2"
}

# Starts a server in its own session and process group (so stopping it takes its children:
# nginx workers, fcgiwrap's and php-cgi's children); its PID is appended to bench_pids.
bench_pids=()
bench_start() { setsid "$@" & bench_pids+=($!); }

# Stops every group bench_start started, whole: TERM, then KILL after 5 s. For an EXIT trap.
bench_stop_all() {
  local pid
  for pid in "${bench_pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${bench_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}

# Writes DIR/http-conditional.conf (the shipped nginx-conf/ server block, listening on
# 127.0.0.1:PORT, passing to the unix socket SOCK, root ROOT) and DIR/params.conf.
bench_shipped_nginx_block() {
  local dir=$1 port=$2 sock=$3 root=$4
  sed -e "s#/etc/nginx/snippets/http-conditional-params.conf#$dir/params.conf#" \
      -e "s#/run/http-conditional/http-conditional.sock#$sock#" \
      -e "s#root /srv/www;#root $root;#" \
      -e "s#listen 80;#listen 127.0.0.1:$port;#" \
      nginx-conf/http-conditional.conf > "$dir/http-conditional.conf"
  cp nginx-conf/http-conditional-params.conf "$dir/params.conf"
}

# Prints the start of an nginx.conf for a benchmark: a worker user that can reach the
# responder's socket when run as root, temp paths under DIR, no access log, and the opening of
# the http block; the caller adds its includes and server blocks, then the closing brace.
bench_nginx_conf_head() {
  local dir=$1
  if [ "$(id -u)" = 0 ]; then echo 'user root;'; fi
  cat <<EOF
worker_processes auto;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    fastcgi_temp_path $dir/tmp/fastcgi;
    proxy_temp_path $dir/tmp/proxy;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

# The responder's resident memory in kB ($hc_pid).
bench_rss() { sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$hc_pid/status"; }

# Runs wrk (-c$connections, -d$duration) with the given arguments after a label: sets RPS to
# the requests per second, adds wrk's error lines to errors_seen, and counts in served the
# requests sent to a URL containing $bench_counted. Not to be called in $(...): the counters
# must survive. The pause after lets a back end finish what wrk abandoned (fcgiwrap runs
# queued requests to the end).
bench_rps() {
  local label=$1 out errors total
  shift
  out=$(wrk -t2 -c"$connections" -d"$duration" "$@")
  errors=$(echo "$out" | sed -n 's/^ *\(Non-2xx or 3xx responses: [0-9]*\|Socket errors:.*\)$/\1/p' | tr '\n' ' ')
  if [ -n "$errors" ]; then errors_seen="$errors_seen ($label) $errors;"; fi
  total=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  case "$*" in *"$bench_counted"*) served=$((served + total)) ;; esac
  RPS=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
  sleep 1
}
