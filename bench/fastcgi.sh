#!/usr/bin/env bash
# nginx on 127.0.0.1 in front of FastCGI back ends, side by side in one run, with wrk:
#   (a) fcgiwrap running a 20 KB sh page (one child, as Debian ships it; and -c 2);
#   (b) `http-conditional fastcgi` with the shipped nginx-conf/ block (paths and port replaced),
#       the same page declared by a sidecar: 200, and 304 with If-None-Match;
#   (c) php-cgi running the original library's logic (bench/original/conditional.php) for the
#       same 20 KB answer: started per request by fcgiwrap (legacy CGI), and as a persistent
#       FastCGI server (php-cgi -b, two children);
#   (d) nginx serving the page as a static file: 200, and its own 304;
#   (f) the floor of the hop: nginx → a fixed-answer FastCGI responder (bench/floor/, one
#       tokio thread, kept connections) that sends our 304's head without any work;
#   (s) `http-conditional serve` on the same folder, no nginx in front: its 304;
#   (b0) with BASE_BIN=PATH (another build of http-conditional, say main's, copied aside): (b)
#       served by that binary behind its own copy of the shipped block, so a change is
#       measured against what it changes, side by side under the same load.
# The 304 rows (b), (d), (f), (s) run interleaved, ROUNDS times (default 1), each figure the median.
# CASES=304 runs only those rows (for profiling a change quickly).
# Also the responder's RSS before and after at least 100k requests.
# Prints a markdown section on stdout. DURATION (default 5s) and CONNECTIONS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
duration=${DURATION:-5s}
connections=${CONNECTIONS:-16}
source bench/lib.sh
bench_need nginx:nginx fcgiwrap:fcgiwrap wrk:wrk php-cgi:php-cgi curl:curl python3:python3

cargo build --release --quiet
cargo build --release --quiet --example fastcgi_floor
bin=${CARGO_TARGET_DIR:-$repo/target}/release/http-conditional
floor_bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples/fastcgi_floor
rounds=${ROUNDS:-1}
only_304=${CASES:-all}

work=$(mktemp -d /tmp/hc-bench-fastcgi.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{www,plain,original,static,nginx/tmp,run}

# The page: 20 KB of HTML from a sh heredoc (the same page as bench/cgi.sh), declared by a
# sidecar for the responder, bare for fcgiwrap.
bench_write_page "$work/www"
NO_SIDECAR=1 bench_write_page "$work/plain"
sh "$work/plain/page.cgi" | tail -n +3 > "$work/static/page.html"
{ echo '#!/usr/bin/php-cgi'; cat bench/original/conditional.php; } > "$work/original/page.php"
chmod 755 "$work/original/page.php"
touch -d @1700000000 "$work/original/page.php" "$work/static/page.html"
# One URL prefix per back end, all naming the same files.
ln -s plain "$work/fcgiwrap1"; ln -s plain "$work/fcgiwrap2"
ln -s original "$work/php-cgi"; ln -s original "$work/php-b"

# Back ends, each on its own unix socket.
# Each back end in its own session and process group, so stopping it takes its children (nginx
# workers, fcgiwrap's and php-cgi's children) down too.
start() { setsid "$@" & pids+=($!); }
start fcgiwrap -s "unix:$work/run/fcgiwrap1.sock"
start fcgiwrap -c 2 -s "unix:$work/run/fcgiwrap2.sock"
start fcgiwrap -c 2 -s "unix:$work/run/fcgiwrap-php.sock"
# As root (a CI machine), scripts run as root too, as the tests do: the responder refuses root
# without --user.
as_user=(); if [ "$(id -u)" = 0 ]; then as_user=(--user root); fi
start "$bin" fastcgi --root "$work/www" --listen "unix:$work/run/hc.sock" "${as_user[@]}"
hc_pid=${pids[-1]}
base_bin=${BASE_BIN:-}
if [ -n "$base_bin" ]; then
  start "$base_bin" fastcgi --root "$work/www" --listen "unix:$work/run/hc0.sock" "${as_user[@]}"
fi
PHP_FCGI_CHILDREN=2 PHP_FCGI_MAX_REQUESTS=0 start php-cgi -b "$work/run/php.sock"
start "$floor_bin" "$work/run/floor.sock"
for sock in fcgiwrap1 fcgiwrap2 fcgiwrap-php hc php floor ${base_bin:+hc0}; do
  for _ in $(seq 100); do [ -S "$work/run/$sock.sock" ] && break; sleep 0.05; done
done

# nginx: the shipped server block for (b); a second server for the others.
port_of() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ours_port=$(port_of)
other_port=$(port_of)
sed -e "s#/etc/nginx/snippets/http-conditional-params.conf#$work/nginx/params.conf#" \
    -e "s#/run/http-conditional/http-conditional.sock#$work/run/hc.sock#" \
    -e "s#root /srv/www;#root $work/www;#" \
    -e "s#listen 80;#listen 127.0.0.1:$ours_port;#" \
    nginx-conf/http-conditional.conf > "$work/nginx/http-conditional.conf"
cp nginx-conf/http-conditional-params.conf "$work/nginx/params.conf"
base_port=$(port_of)
base_include=
if [ -n "$base_bin" ]; then
  sed -e "s#http_conditional#http_conditional_base#" \
      -e "s#$work/run/hc.sock#$work/run/hc0.sock#" \
      -e "s#listen 127.0.0.1:$ours_port;#listen 127.0.0.1:$base_port;#" \
      "$work/nginx/http-conditional.conf" > "$work/nginx/base.conf"
  base_include="include $work/nginx/base.conf;"
fi
user_line=
if [ "$(id -u)" = 0 ]; then user_line='user root;'; fi
cat > "$work/nginx/nginx.conf" <<EOF
$user_line
worker_processes auto;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/html;
    client_body_temp_path $work/nginx/tmp/body;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    proxy_temp_path $work/nginx/tmp/proxy;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    include $work/nginx/http-conditional.conf;
    $base_include
    # Kept connections as for ours (the shipped upstream block's keepalive).
    upstream floor {
        server unix:$work/run/floor.sock;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$other_port;
        root $work;
        location /fcgiwrap1/ {
            fastcgi_pass unix:$work/run/fcgiwrap1.sock;
            include $work/nginx/params.conf;
        }
        location /fcgiwrap2/ {
            fastcgi_pass unix:$work/run/fcgiwrap2.sock;
            include $work/nginx/params.conf;
        }
        location /php-cgi/ {
            fastcgi_pass unix:$work/run/fcgiwrap-php.sock;
            include $work/nginx/params.conf;
        }
        location /php-b/ {
            fastcgi_pass unix:$work/run/php.sock;
            include $work/nginx/params.conf;
        }
        location /static/ {
        }
        location /floor/ {
            fastcgi_pass floor;
            fastcgi_keep_conn on;
            include $work/nginx/params.conf;
        }
    }
}
EOF
start nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" \
  -g "daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;"
ours=http://127.0.0.1:$ours_port
serve_port=$(port_of)
start "$bin" serve --root "$work/www" --listen "127.0.0.1:$serve_port"
s_url=http://127.0.0.1:$serve_port/page.cgi
other=http://127.0.0.1:$other_port
for _ in $(seq 100); do curl -s -o /dev/null "$other/static/page.html" && break; sleep 0.1; done

etag_of() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' "${@:2}" "$1"; }
fail() { echo "bench/fastcgi.sh: $*" >&2; cat "$work/nginx/error.log" >&2; exit 1; }
b_url=$ours/page.cgi
b0_url=http://127.0.0.1:$base_port/page.cgi
c1_url=$other/php-cgi/page.php
c2_url=$other/php-b/page.php
d_url=$other/static/page.html
f_url=$other/floor/page.cgi
for url in "$other/fcgiwrap1/page.cgi" "$other/fcgiwrap2/page.cgi" "$b_url" "$c1_url" "$c2_url" "$d_url"; do
  [ "$(status_of "$url")" = 200 ] || fail "$url is not 200"
  [ "$(curl -s "$url" | wc -c)" -ge 20000 ] || fail "$url: body is short"
done
b_tag=$(etag_of "$b_url"); c1_tag=$(etag_of "$c1_url"); c2_tag=$(etag_of "$c2_url"); d_tag=$(etag_of "$d_url")
for check in "$b_url|$b_tag" "$c1_url|$c1_tag" "$c2_url|$c2_tag" "$d_url|$d_tag"; do
  url=${check%%|*}; tag=${check#*|}
  [ -n "$tag" ] || fail "$url has no ETag"
  [ "$(status_of "$url" -H "If-None-Match: $tag")" = 304 ] || fail "$url gives no 304"
done
[ "$(status_of "$f_url" -H "If-None-Match: $b_tag")" = 304 ] || fail "$f_url gives no 304"
if [ -n "$base_bin" ]; then
  [ "$(status_of "$b0_url" -H "If-None-Match: $b_tag")" = 304 ] || fail "$b0_url gives no 304"
fi
for _ in $(seq 100); do curl -s -o /dev/null "$s_url" && break; sleep 0.05; done
[ "$(status_of "$s_url" -H "If-None-Match: $b_tag")" = 304 ] || fail "$s_url gives no 304"

served=0
errors_seen=
bench_counted=$b_url
rss() { bench_rss; }
rps() { bench_rps "$@"; }
rss_start=$(rss)
wrk -t2 -c"$connections" -d1s "$b_url" >/dev/null  # warm-up
wrk -t2 -c"$connections" -d1s -H "If-None-Match: $b_tag" "$b_url" >/dev/null
rss_warm=$(rss)
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }
a1=–; a2=–; b200=–; c1_200=–; c1_304=–; c2_200=–; c2_304=–; d200=–
rows_304=4; [ -z "$base_bin" ] || rows_304=5
echo "bench/fastcgi.sh: running, about $(((rows_304 * rounds + 8) * ${duration%s} + 20)) s" >&2
if [ "$only_304" != 304 ]; then
  rps a1 "$other/fcgiwrap1/page.cgi"; a1=$RPS
  rps a2 "$other/fcgiwrap2/page.cgi"; a2=$RPS
  rps b200 "$b_url"; b200=$RPS
  rps c1-200 "$c1_url"; c1_200=$RPS
  rps c1-304 -H "If-None-Match: $c1_tag" "$c1_url"; c1_304=$RPS
  rps c2-200 "$c2_url"; c2_200=$RPS
  rps c2-304 -H "If-None-Match: $c2_tag" "$c2_url"; c2_304=$RPS
  rps d200 "$d_url"; d200=$RPS
fi
b304s=(); d304s=(); f304s=(); s304s=(); b0_304s=()
for _ in $(seq "$rounds"); do
  rps b304 -H "If-None-Match: $b_tag" "$b_url"; b304s+=("$RPS")
  if [ -n "$base_bin" ]; then rps b0-304 -H "If-None-Match: $b_tag" "$b0_url"; b0_304s+=("$RPS"); fi
  rps f304 -H "If-None-Match: $b_tag" "$f_url"; f304s+=("$RPS")
  rps d304 -H "If-None-Match: $d_tag" "$d_url"; d304s+=("$RPS")
  rps s304 -H "If-None-Match: $b_tag" "$s_url"; s304s+=("$RPS")
done
b304=$(median "${b304s[@]}"); d304=$(median "${d304s[@]}"); f304=$(median "${f304s[@]}")
s304=$(median "${s304s[@]}")
b0_304=–; [ -z "$base_bin" ] || b0_304=$(median "${b0_304s[@]}")
# At least 100k requests through the responder before the second RSS reading.
while [ "$served" -lt 100000 ]; do rps b304 -H "If-None-Match: $b_tag" "$b_url"; done
rss_end=$(rss)
kill -0 "$hc_pid" || fail "the responder died"

ratio_or_dash() { if [ "$2" = – ] || [ "$1" = – ]; then echo –; else ratio "$@"; fi; }
verdict() { if [ "$1" = – ]; then echo "not run"; else bench_verdict "$@"; fi; }
r_b200_a2=$(ratio_or_dash "$b200" "$a2")
r_b304_c1=$(ratio_or_dash "$b304" "$c1_304" 0)
r_b304_c2=$(ratio_or_dash "$b304" "$c2_304")
r_b304_d=$(ratio "$b304" "$d304")
r_f304_d=$(ratio "$f304" "$d304")
r_b304_f=$(ratio "$b304" "$f304")
r_s304_b=$(ratio "$s304" "$b304")
r_b304_b0=$(ratio_or_dash "$b304" "$b0_304")
r_b200_a1=$(ratio_or_dash "$b200" "$a1")
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.1f}')" "$1"; }

cat <<EOF
## nginx → FastCGI (bench/fastcgi.sh)

wrk, $connections connections, $duration per case ($rounds interleaved rounds of the 304 rows, medians), 127.0.0.1, $(nproc) cores, nginx $(nginx -v 2>&1 | sed 's#.*/##').
The page is a 20 KB sh script; (c) is the original library's logic (bench/original/conditional.php).

| Case | 200 req/s | 304 req/s |
|------|----------:|----------:|
| (a) nginx → fcgiwrap, one child (Debian's default) → sh page | $a1 | – |
| (a) nginx → fcgiwrap -c 2 → sh page | $a2 | – |
| (b) nginx → http-conditional fastcgi (shipped nginx-conf/) | $b200 | $b304 |
| (c) nginx → fcgiwrap → php-cgi per request + original library | $c1_200 | $c1_304 |
| (c) nginx → php-cgi -b (persistent, 2 children) + original library | $c2_200 | $c2_304 |
| (d) nginx, static file | $d200 | $d304 |
| (f) nginx → fixed-answer FastCGI responder (bench/floor/: the hop's floor) | – | $f304 |
| (s) http-conditional serve, no nginx | – | $s304 |
| (b0) (b) served by BASE_BIN${base_bin:+ ($base_bin)} | – | $b0_304 |

| Ratio | Value | Target |
|-------|------:|--------|
| (b) 200 / (a) fcgiwrap -c 2 200 | $r_b200_a2 | ≥ 1.5 ($(verdict "$r_b200_a2" 1.5)) |
| (b) 200 / (a) fcgiwrap one child 200 | $r_b200_a1 | |
| (b) 304 / (c) php-cgi per request 304 | $r_b304_c1 | ≥ 100 ($(verdict "$r_b304_c1" 100)) |
| (b) 304 / (c) php-cgi -b 304 | $r_b304_c2 | |
| (b) 304 / (d) nginx static 304 | $r_b304_d | ≥ 0.35 ($(verdict "$r_b304_d" 0.35)) |
| (f) floor 304 / (d) nginx static 304 | $r_f304_d | (the most any responder gets) |
| (b) 304 / (f) floor 304 | $r_b304_f | (the share of the hop's allowance we keep) |
| (s) serve 304 / (b) 304 | $r_s304_b | ≥ 1 ($(verdict "$r_s304_b" 1)) |
| (b) 304 / (b0) BASE_BIN's 304 | $r_b304_b0 | (this build against the base, side by side) |

Responder RSS: $(mib "$rss_start") MiB at start, $(mib "$rss_warm") MiB after warm-up, $(mib "$rss_end") MiB after $served requests.
wrk errors: ${errors_seen:-none}.
Each round's 304 req/s: (b) ${b304s[*]}; (d) ${d304s[*]}; (f) ${f304s[*]}; (s) ${s304s[*]}${base_bin:+; (b0) ${b0_304s[*]}}.
Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
EOF
