#!/usr/bin/env bash
# Apache httpd (event MPM, mod_cgid) on 127.0.0.1, side by side in one run, with wrk:
#   (a) a 20 KB sh page run directly by mod_cgid; it prints its own Last-Modified and ETag, so
#       Apache answers the 304 itself, after running the page;
#   (b) the same page through http-conditional as the Action handler (apache-conf/
#       action-cgi.conf as shipped, paths replaced), declared by a sidecar;
#   (c) php-cgi under Action running the original httpConditional() logic
#       (bench/original/conditional.php) for the same 20 KB answer;
#   (d) for comparison, the same page through the FastCGI responder behind mod_proxy_fcgi
#       (apache-conf/fastcgi.conf as shipped): no wrapper process per request.
# Each case: a plain GET (200) and a GET with the matching If-None-Match (304).
# Prints a markdown section on stdout. DURATION (default 5s) and CONNECTIONS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
duration=${DURATION:-5s}
connections=${CONNECTIONS:-16}
apache2=/usr/sbin/apache2
modules=/usr/lib/apache2/modules
source bench/lib.sh
bench_need apache2:apache2 wrk:wrk php-cgi:php-cgi curl:curl python3:python3

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/http-conditional
# The Action handler starts once per request: deploy it as the README recommends for CGI mode,
# statically linked (STATIC=0 measures the default dynamic build instead).
cgi_bin=$bin
if [ "${STATIC:-1}" = 1 ]; then
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet --target x86_64-unknown-linux-gnu
  cgi_bin=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release/http-conditional
fi

work=$(mktemp -d /tmp/hc-bench-apache.XXXXXX)
chmod 755 "$work"
apache_pid=
responder_pid=
cleanup() {
  if [ -n "$responder_pid" ]; then
    kill -TERM "$responder_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$responder_pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$responder_pid" 2>/dev/null || true
  fi
  if [ -n "$apache_pid" ]; then
    kill -TERM "$apache_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$apache_pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$apache_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{conf,run,logs,htdocs,lib,legacy,direct,original,php-bin,fcgi,fcgi-run}

# The page: 20 KB of HTML from a sh heredoc, with its own validators for case (a).
for dir in direct legacy fcgi; do
  bench_write_page "$work/$dir" 'Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT' 'ETag: "direct-1"'
done
rm "$work/direct/page.cgi.conditional.json"
cp bench/original/conditional.php "$work/original/page.php"
touch -d @1700000000 "$work/original/page.php"
cp "$cgi_bin" "$work/lib/http-conditional"
ln -s "$(command -v php-cgi)" "$work/php-bin/php-cgi"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s#/usr/lib/http-conditional#$work/lib#g" -e "s#/var/www/legacy#$work/legacy#g" \
  apache-conf/action-cgi.conf > "$work/conf/action-cgi.conf"
sed -e "s#/var/www/fcgi#$work/fcgi#g" -e "s#/run/http-conditional.sock#$work/fcgi-run/http-conditional.sock#g" \
  apache-conf/fastcgi.conf > "$work/conf/fastcgi.conf"
user_lines=
as_server_user=()
if [ "$(id -u)" = 0 ]; then
  user_lines=$'User www-data\nGroup www-data'
  as_server_user=(setpriv --reuid=www-data --regid=www-data --clear-groups)
  chown www-data:www-data "$work/fcgi-run"
fi
cat > "$work/conf/httpd.conf" <<EOF
ServerRoot "$work"
PidFile "$work/run/httpd.pid"
DefaultRuntimeDir "$work/run"
Mutex file:$work/run default
ErrorLog "$work/logs/error.log"
LogLevel warn
Listen 127.0.0.1:$port
ServerName 127.0.0.1
$user_lines
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule cgid_module $modules/mod_cgid.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule authz_host_module $modules/mod_authz_host.so
LoadModule mime_module $modules/mod_mime.so
LoadModule alias_module $modules/mod_alias.so
LoadModule actions_module $modules/mod_actions.so
LoadModule env_module $modules/mod_env.so
LoadModule proxy_module $modules/mod_proxy.so
LoadModule proxy_fcgi_module $modules/mod_proxy_fcgi.so
ScriptSock "$work/run/cgid.sock"
TypesConfig /etc/mime.types
DocumentRoot "$work/htdocs"
<Directory />
    AllowOverride None
    Require all denied
</Directory>

# (a) the page run directly by mod_cgid.
ScriptAlias /direct/ "$work/direct/"
<Directory "$work/direct">
    Require all granted
</Directory>

# (b) through http-conditional, as shipped.
Include "$work/conf/action-cgi.conf"

# (c) php-cgi as the Action handler, the classic setup for PHP under CGI.
ScriptAlias /php-bin/ "$work/php-bin/"
<Directory "$work/php-bin">
    Options +ExecCGI +FollowSymLinks
    Require env REDIRECT_STATUS
</Directory>
Action php-original /php-bin/php-cgi
Alias /original/ "$work/original/"
<Directory "$work/original">
    <FilesMatch "\.php$">
        SetHandler php-original
    </FilesMatch>
    Require all granted
</Directory>

# (d) the FastCGI responder, as shipped.
Include "$work/conf/fastcgi.conf"
EOF
# Its own session: on shutdown Apache signals its whole process group.
setsid "$apache2" -d "$work" -f "$work/conf/httpd.conf" -DFOREGROUND >"$work/logs/stdout.log" 2>&1 &
apache_pid=$!
"${as_server_user[@]}" "$bin" fastcgi --root "$work/fcgi" --listen "unix:$work/fcgi-run/http-conditional.sock" \
  2>"$work/logs/responder.log" &
responder_pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do curl -s -o /dev/null "$base/" && break; sleep 0.1; done

etag_of() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' "${@:2}" "$1"; }
a_url=$base/direct/page.cgi
b_url=$base/legacy/page.cgi
c_url=$base/original/page.php
d_url=$base/fcgi/page.cgi
for _ in $(seq 100); do [ -S "$work/fcgi-run/http-conditional.sock" ] && break; sleep 0.05; done
a_tag=$(etag_of "$a_url")
b_tag=$(etag_of "$b_url")
c_tag=$(etag_of "$c_url")
d_tag=$(etag_of "$d_url")
for check in "$a_url|$a_tag" "$b_url|$b_tag" "$c_url|$c_tag" "$d_url|$d_tag"; do
  url=${check%%|*}
  tag=${check#*|}
  [ "$(status_of "$url")" = 200 ] || { echo "bench/apache.sh: $url is not 200" >&2; cat "$work/logs/error.log" >&2; exit 1; }
  [ -n "$tag" ] || { echo "bench/apache.sh: $url has no ETag" >&2; exit 1; }
  [ "$(status_of "$url" -H "If-None-Match: $tag")" = 304 ] || { echo "bench/apache.sh: $url gives no 304" >&2; exit 1; }
done
[ "$(curl -s "$b_url" | wc -c)" -ge 20000 ] || { echo "bench/apache.sh: (b) body is short" >&2; exit 1; }

# Requests per second; errors and unexpected statuses are reported with the figure.
rps() {
  local out
  out=$(wrk -t2 -c"$connections" -d"$duration" "$@")
  local errors
  errors=$(echo "$out" | sed -n 's/^ *\(Non-2xx or 3xx responses: [0-9]*\|Socket errors:.*\)$/\1/p' | tr '\n' ' ')
  [ -z "$errors" ] || echo "bench/apache.sh: $* : $errors" >&2
  local figure
  figure=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
  echo "${figure:-0}"
}
wrk -t2 -c"$connections" -d1s "$b_url" >/dev/null  # warm-up
a200=$(rps "$a_url")
a304=$(rps -H "If-None-Match: $a_tag" "$a_url")
b200=$(rps "$b_url")
b304=$(rps -H "If-None-Match: $b_tag" "$b_url")
c200=$(rps "$c_url")
c304=$(rps -H "If-None-Match: $c_tag" "$c_url")
d200=$(rps "$d_url")
d304=$(rps -H "If-None-Match: $d_tag" "$d_url")

r_b304_a304=$(ratio "$b304" "$a304")
r_b304_c304=$(ratio "$b304" "$c304")
r_b200_a200=$(ratio "$b200" "$a200")
r_d304_a304=$(ratio "$d304" "$a304")
r_d200_a200=$(ratio "$d200" "$a200")

cat <<EOF
## Apache httpd 2.4, event MPM + mod_cgid (bench/apache.sh)

wrk, $connections connections, $duration per case, 127.0.0.1, $(nproc) cores, load average
$(cut -d' ' -f1 /proc/loadavg) at the end. The page is a 20 KB sh script; (c) is php-cgi running the
original library's logic (bench/original/conditional.php).

| Case | 200 req/s | 304 req/s |
|------|----------:|----------:|
| (a) mod_cgid runs the page directly (Apache's own 304, after running it) | $a200 | $a304 |
| (b) http-conditional as the Action handler (304 without running the page; $( [ "${STATIC:-1}" = 1 ] && echo "static build" || echo "dynamic build")) | $b200 | $b304 |
| (c) php-cgi + original httpConditional() under Action | $c200 | $c304 |
| (d) FastCGI responder behind mod_proxy_fcgi (no wrapper process per request) | $d200 | $d304 |

| Ratio | Value | Target |
|-------|------:|--------|
| (b) 304 / (a) 304 | $r_b304_a304 | ≥ 1.5 ($(verdict "$r_b304_a304" 1.5)) |
| (b) 304 / (c) 304 | $r_b304_c304 | ≥ 5 ($(verdict "$r_b304_c304" 5)) |
| (b) 200 / (a) 200 | $r_b200_a200 | ≥ 0.8 ($(verdict "$r_b200_a200" 0.8)) |
| (d) 304 / (a) 304 | $r_d304_a304 | (for comparison) |
| (d) 200 / (a) 200 | $r_d200_a200 | (for comparison) |
EOF
