#!/usr/bin/env bash
# Scale-out, side by side in one run:
#   (1) Varnish (varnish-conf/ as shipped) → nginx → the page with a 1 s max-age, 1,000 client
#       requests paced over about ten seconds: origin requests, script runs and bytes from the
#       origin, (a) over http-conditional fastcgi with "etag": "content", (b) over fcgiwrap
#       running the same script (which prints the same Cache-Control itself);
#   (2) what "etag": "content" costs a 304: CGI mode (hashing every time) with hyperfine, and
#       the FastCGI mode (digests cached by device, inode, size and mtime) with wrk, each
#       against "etag": "time" on the same files.
# Prints a markdown section on stdout. REQUESTS (default 1000), INTERVAL_MS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
requests=${REQUESTS:-1000}
interval_ms=${INTERVAL_MS:-10}
source bench/lib.sh
bench_need nginx:nginx fcgiwrap:fcgiwrap varnishd:varnish wrk:wrk hyperfine:hyperfine curl:curl python3:python3

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/http-conditional

work=$(mktemp -d /tmp/hc-bench-scale-out.XXXXXX)
chmod 755 "$work"
trap 'bench_stop_all; rm -rf "$work"' EXIT
port_of() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fail() { echo "bench/scale-out.sh: $*" >&2; cat "$work"/*/error.log >&2 2>/dev/null || true; exit 1; }

# The page: 20 KB of text that compresses like a real page rather than to nothing (base64 of
# random bytes; bench_page's repeated line gzips to 300 bytes), with the policy it states
# itself (for fcgiwrap) and a line that counts its runs; byte for byte the same everywhere.
head -c 15000 /dev/urandom | base64 -w 76 > "$work/body.txt"
page() {
  echo '#!/bin/sh'
  echo 'echo run >> "$DOCUMENT_ROOT/../runs.log"'
  echo "printf 'Content-Type: text/html; charset=utf-8\\nCache-Control: public, max-age=1\\n\\n'"
  echo "cat <<'HTML'"
  cat "$work/body.txt"
  echo 'HTML'
}
for stack in hc fw; do
  mkdir -p "$work/$stack"/{www,nginx/tmp}
  page > "$work/$stack/www/page.cgi"
  chmod 755 "$work/$stack/www/page.cgi"
  : > "$work/$stack/runs.log"
done
echo '{"etag": "content", "cache_seconds": 1, "cache_privacy": "public"}' \
  > "$work/hc/www/page.cgi.conditional.json"

bench_start "$bin" fastcgi --root "$work/hc/www" --listen "unix:$work/hc/hc.sock" \
  $([ "$(id -u)" = 0 ] && echo --user root)
bench_start fcgiwrap -c 2 -s "unix:$work/fw/fcgiwrap.sock"
for sock in hc/hc fw/fcgiwrap; do
  for _ in $(seq 100); do [ -S "$work/$sock.sock" ] && break; sleep 0.05; done
done

user_line=
if [ "$(id -u)" = 0 ]; then user_line='user root;'; fi
# nginx for one stack: its server block (the shipped one for hc), an access log of status and
# bytes sent (what Varnish received from the origin).
start_nginx() {
  local stack=$1 server=$2 dir=$work/$1/nginx
  cat > "$dir/nginx.conf" <<CONF
$user_line
worker_processes 1;
events { worker_connections 1024; }
http {
    log_format origin '\$status \$bytes_sent';
    access_log $dir/access.log origin;
    default_type text/html;
    client_body_temp_path $dir/tmp/body;
    fastcgi_temp_path $dir/tmp/fastcgi;
    proxy_temp_path $dir/tmp/proxy;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    $server
}
CONF
  bench_start nginx -p "$dir" -c "$dir/nginx.conf" \
    -g "daemon off; pid $dir/nginx.pid; error_log $dir/error.log;"
}
hc_nginx=$(port_of); fw_nginx=$(port_of)
bench_shipped_nginx_block "$work/hc/nginx" "$hc_nginx" "$work/hc/hc.sock" "$work/hc/www"
start_nginx hc "include $work/hc/nginx/http-conditional.conf;"
start_nginx fw "server {
        listen 127.0.0.1:$fw_nginx;
        root $work/fw/www;
        # The same compression as the shipped block, so both origins send the same bytes.
        gzip on;
        gzip_min_length 256;
        location ~ \\.cgi\$ {
            fastcgi_pass unix:$work/fw/fcgiwrap.sock;
            include $work/hc/nginx/params.conf;
        }
    }"

# Varnish for one stack, with the shipped VCL; its backend that stack's nginx.
start_varnish() {
  local stack=$1 backend=$2 port=$3
  sed "s/\.port = \"8080\";/.port = \"$backend\";/" varnish-conf/http-conditional.vcl \
    > "$work/$stack/default.vcl"
  bench_start varnishd -F -a "127.0.0.1:$port" -f "$work/$stack/default.vcl" \
    -n "$work/$stack/varnish" -s malloc,64m -T none
}
hc_front=$(port_of); fw_front=$(port_of)
start_varnish hc "$hc_nginx" "$hc_front" > "$work/hc/varnishd.log" 2>&1
start_varnish fw "$fw_nginx" "$fw_front" > "$work/fw/varnishd.log" 2>&1
for port in "$hc_front" "$fw_front"; do
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
# Counted from an empty cache: the first request's fetch is part of the 1,000.
for stack in hc fw; do : > "$work/$stack/nginx/access.log"; : > "$work/$stack/runs.log"; done

# 1,000 requests per stack, paced, both stacks at once (so they share the machine's load).
client() {
  python3 - "$1" "$requests" "$interval_ms" <<'PY'
import http.client, sys, time
port, count, interval = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
start = time.monotonic()
for i in range(count):
    conn.request("GET", "/page.cgi", headers={"Accept-Encoding": "gzip"})
    r = conn.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}")
    delay = start + (i + 1) * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(f"{time.monotonic() - start:.1f}")
PY
}
client "$hc_front" > "$work/hc/elapsed" & hc_client=$!
client "$fw_front" > "$work/fw/elapsed" & fw_client=$!
wait "$hc_client" || fail "client for http-conditional failed"
wait "$fw_client" || fail "client for fcgiwrap failed"
sleep 1 # background revalidations still in flight

origin_requests() { wc -l < "$work/$1/nginx/access.log"; }
origin_304s() { awk '$1 == 304' "$work/$1/nginx/access.log" | wc -l; }
origin_bytes() { awk '{ s += $2 } END { print s + 0 }' "$work/$1/nginx/access.log"; }
runs() { wc -l < "$work/$1/runs.log"; }

# (2) The cost of hashing: a 304 with "etag": "content" against "etag": "time", same files:
# the 20 KB page, and the page with a 1 MiB folder (64 files of 16 KiB) in depends_on.
cost=$work/cost
mkdir -p "$cost/data"
for i in $(seq 64); do head -c 12288 /dev/urandom | base64 -w 0 > "$cost/data/$i.txt"; done
for basis in time content; do
  page > "$cost/$basis-page.cgi"
  page > "$cost/$basis-folder.cgi"
  chmod 755 "$cost"/*.cgi
  echo "{\"etag\": \"$basis\"}" > "$cost/$basis-page.cgi.conditional.json"
  echo "{\"etag\": \"$basis\", \"depends_on\": [\"data/\"]}" > "$cost/$basis-folder.cgi.conditional.json"
done
# The CGI environment, given per command (exported, it would put the responder below in CGI mode).
cgi_env="GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 QUERY_STRING= DOCUMENT_ROOT=$cost"
cgi() { env $cgi_env "$@"; }
tag_of() { cgi SCRIPT_FILENAME="$cost/$1.cgi" "$bin" | tr -d '\r' | sed -n 's/^ETag: //p'; }
mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][int(sys.argv[2])]['mean'])" "$@"; }
ms() { python3 -c "import sys; print(f'{float(sys.argv[1])*1000:.2f}')" "$1"; }
cgi_pair() { # name: hyperfine the time and content 304s for NAME, one after the other
  local name=$1 t c
  t=$(tag_of "time-$name"); c=$(tag_of "content-$name")
  [ -n "$t" ] && [ -n "$c" ] || fail "no ETag for $name"
  [[ $(cgi SCRIPT_FILENAME="$cost/time-$name.cgi" HTTP_IF_NONE_MATCH="$t" "$bin") == "Status: 304"* ]] || fail "no 304 for time-$name"
  [[ $(cgi SCRIPT_FILENAME="$cost/content-$name.cgi" HTTP_IF_NONE_MATCH="$c" "$bin") == "Status: 304"* ]] || fail "no 304 for content-$name"
  # Both through env(1), so the two commands start the same way.
  hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$work/$name.json" \
    "env $cgi_env SCRIPT_FILENAME=$cost/time-$name.cgi HTTP_IF_NONE_MATCH=$t $bin" \
    "env $cgi_env SCRIPT_FILENAME=$cost/content-$name.cgi HTTP_IF_NONE_MATCH=$c $bin" >/dev/null 2>&1
}
cgi_pair page
cgi_pair folder

# The FastCGI mode: the same two folder pages behind the shipped nginx block, wrk for 304s.
bench_start "$bin" fastcgi --root "$cost" --listen "unix:$work/cost.sock" \
  $([ "$(id -u)" = 0 ] && echo --user root)
for _ in $(seq 100); do [ -S "$work/cost.sock" ] && break; sleep 0.05; done
mkdir -p "$work/cost-nginx/tmp"
cost_port=$(port_of)
bench_shipped_nginx_block "$work/cost-nginx" "$cost_port" "$work/cost.sock" "$cost"
cat > "$work/cost-nginx/nginx.conf" <<CONF
$user_line
worker_processes auto;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/cost-nginx/tmp/body;
    fastcgi_temp_path $work/cost-nginx/tmp/fastcgi;
    proxy_temp_path $work/cost-nginx/tmp/proxy;
    uwsgi_temp_path $work/cost-nginx/tmp/uwsgi;
    scgi_temp_path $work/cost-nginx/tmp/scgi;
    include $work/cost-nginx/http-conditional.conf;
}
CONF
bench_start nginx -p "$work/cost-nginx" -c "$work/cost-nginx/nginx.conf" \
  -g "daemon off; pid $work/cost-nginx/nginx.pid; error_log $work/cost-nginx/error.log;"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$cost_port/" && break; sleep 0.1; done
wrk_304() { # basis: requests/s for 304s of the folder page
  local url=http://127.0.0.1:$cost_port/$1-folder.cgi tag
  tag=$(curl -s -D - -o /dev/null "$url" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $tag" "$url")" = 304 ] || fail "no 304 from $url"
  wrk -t 2 -c 16 -d "${DURATION:-5s}" -H "If-None-Match: $tag" "$url" | awk '/Requests\/sec/ { print $2 }'
}
fcgi_time=$(wrk_304 time)
fcgi_content=$(wrk_304 content)

page_t=$(mean "$work/page.json" 0); page_c=$(mean "$work/page.json" 1)
folder_t=$(mean "$work/folder.json" 0); folder_c=$(mean "$work/folder.json" 1)

cat <<MD
## Scale-out (bench/scale-out.sh)

Varnish $(varnishd -V 2>&1 | sed -n 's/^varnishd (varnish-\([0-9.]*\).*/\1/p') with varnish-conf/ as shipped → nginx → the 20 KB sh page, \`public, max-age=1\`;
$requests client requests per stack, one every $interval_ms ms (about $(cat "$work/hc/elapsed") s), both stacks at once.

| per $requests client requests | http-conditional fastcgi, \`"etag": "content"\` | fcgiwrap, same script | ratio |
|---|---:|---:|---:|
| origin requests (Varnish → nginx) | $(origin_requests hc) ($(origin_304s hc) of them 304) | $(origin_requests fw) ($(origin_304s fw) of them 304) | |
| script runs | $(runs hc) | $(runs fw) | $(ratio "$(runs fw)" "$(runs hc)" 1)× fewer |
| bytes from the origin | $(origin_bytes hc) | $(origin_bytes fw) | $(ratio "$(origin_bytes fw)" "$(origin_bytes hc)" 1)× fewer |

What \`"etag": "content"\` costs a 304 against \`"etag": "time"\` on the same files
(CGI mode: hyperfine -N, ${RUNS:-300} runs each, hashing every time; FastCGI mode: wrk, 16
connections, ${DURATION:-5s}, behind the shipped nginx block, digests cached):

| 304 for | \`"time"\` | \`"content"\` | ratio |
|---|---:|---:|---:|
| CGI mode, the 20 KB page alone | $(ms "$page_t") ms | $(ms "$page_c") ms | $(ratio "$page_c" "$page_t")× time |
| CGI mode, the page + a 1 MiB folder (64 files) in depends_on | $(ms "$folder_t") ms | $(ms "$folder_c") ms | $(ratio "$folder_c" "$folder_t")× time |
| FastCGI mode, the page + the same folder | $fcgi_time req/s | $fcgi_content req/s | $(ratio "$fcgi_content" "$fcgi_time")× throughput |
MD
