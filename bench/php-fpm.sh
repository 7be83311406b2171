#!/usr/bin/env bash
# nginx → http-conditional → php-fpm against nginx → php-fpm direct, side by side in one run,
# with wrk on 127.0.0.1:
#   (a) a templated PHP page of about 20 KB, declared by a sidecar: its 200 through the
#       responder (shipped nginx-conf/http-conditional-php-fpm.conf) and straight from php-fpm;
#   (b) its 304 from the responder, without php-fpm;
#   (c) php-fpm running the original library's 304 (bench/original/conditional.php): trivial;
#   (d) a page that must do its set-up (includes, a JSON config, an SQLite query, a template)
#       before the original library can answer its own 304, as real pages do;
# and the responder's RSS before and after at least 100k requests.
# Prints a markdown section. DURATION (default 5s), CONNECTIONS (default 16), ROUNDS (default 3), HC_ARGS (the
# responder's flags; default "--max-children 4", the pool's pm.max_children, as docs/php-fpm.md
# advises; HC_ARGS= for the defaults). COUNTS=1 adds,
# for the page's 200 through the responder, counts per request that do not depend on the load:
# the responder's system calls (strace -c) and context switches (perf stat), with php-fpm's and
# nginx's context switches for scale. BIN=PATH runs another build of http-conditional (say
# main's, copied aside) instead of building this tree, for figures side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
duration=${DURATION:-5s}
connections=${CONNECTIONS:-16}
source bench/lib.sh
bench_need nginx:nginx php-fpm8.2:php-fpm wrk:wrk curl:curl python3:python3
php -m 2>/dev/null | grep -qi pdo_sqlite || bench_need php-sqlite-missing:php8.2-sqlite3

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/http-conditional
fi

work=$(mktemp -d /tmp/hc-bench-fpm.XXXXXX)
chmod 755 "$work"
cleanup() {
  bench_stop_all
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{www/inc,nginx/tmp,run}

# (a) the templated page and the data it depends on.
cat > "$work/www/data.json" <<'EOF'
{"title": "News", "items": []}
EOF
python3 - "$work/www/data.json" <<'EOF'
import json, sys
items = [{"title": f"Item {i}", "body": "The same twenty kilobytes, rendered from a template."} for i in range(200)]
json.dump({"title": "News", "items": items}, open(sys.argv[1], "w"))
EOF
cat > "$work/www/page.php" <<'EOF'
<?php
$data = json_decode(file_get_contents(__DIR__ . '/data.json'), true);
header('Content-Type: text/html; charset=utf-8');
echo "<!DOCTYPE html>\n<title>", htmlspecialchars($data['title']), "</title>\n<ul>\n";
foreach ($data['items'] as $item) {
    printf("<li><b>%s</b> %s</li>\n", htmlspecialchars($item['title']), htmlspecialchars($item['body']));
}
echo "</ul>\n";
EOF
echo '{"depends_on": ["data.json"], "cache_seconds": 0}' > "$work/www/page.php.conditional.json"
# (c) the original library under php-fpm.
cp bench/original/conditional.php "$work/www/original.php"
# (d) a page with set-up before its own 304.
for i in 1 2 3 4 5 6; do
  printf '<?php\nfunction helper%s($s) { return strtoupper(substr($s, 0, 1)) . substr($s, 1); }\n' "$i" > "$work/www/inc/lib$i.php"
done
python3 - "$work/www/site.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("create table items(id integer primary key, title text, modified integer)")
db.executemany("insert into items(title, modified) values (?, ?)", [(f"item {i}", 1700000000 + i) for i in range(500)])
db.commit()
EOF
{
  echo '<?php'
  echo 'for ($i = 1; $i <= 6; $i++) { require __DIR__ . "/inc/lib$i.php"; }'
  echo '$config = json_decode(file_get_contents(__DIR__ . "/data.json"), true);'
  echo '$db = new PDO("sqlite:" . __DIR__ . "/site.db");'
  echo '$last = (int) $db->query("SELECT max(modified) FROM items")->fetchColumn();'
  sed -n '/^function httpConditional/,/^}/p' bench/original/conditional.php
  echo 'httpConditional($last);'
  echo 'header("Content-Type: text/html; charset=utf-8");'
  echo 'foreach ($db->query("SELECT title FROM items LIMIT 200") as $row) { echo "<p>", helper1($row["title"]), "</p>\n"; }'
} > "$work/www/heavy.php"
touch -d @1700000000 "$work/www/"*.php

# php-fpm: Debian's php.ini (opcache on), a pool of our own on a unix socket.
cat > "$work/run/fpm.conf" <<EOF
[global]
pid = $work/run/fpm.pid
error_log = $work/run/fpm-error.log
daemonize = no
[bench]
user = $( [ "$(id -u)" = 0 ] && echo root || id -un )
listen = $work/run/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = 4
pm.max_requests = 0
EOF
bench_start php-fpm8.2 -F -R -y "$work/run/fpm.conf"
# As root the responder runs scripts only as the user --user names: here root itself.
as_user=()
if [ "$(id -u)" = 0 ]; then as_user=(--user root); fi
port_of() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
metrics_port=$(port_of)
bench_start "$bin" fastcgi --root "$work/www" --listen "unix:$work/run/hc.sock" "${as_user[@]}" \
  --metrics "127.0.0.1:$metrics_port" ${HC_ARGS---max-children 4}
hc_pid=${bench_pids[-1]}
for sock in fpm hc; do
  for _ in $(seq 100); do [ -S "$work/run/$sock.sock" ] && break; sleep 0.05; done
done

ours_port=$(port_of)
direct_port=$(port_of)
cp nginx-conf/http-conditional-params.conf "$work/nginx/params.conf"
sed -e "s#/etc/nginx/snippets/http-conditional-params.conf#$work/nginx/params.conf#" \
    -e "s#/run/http-conditional/http-conditional.sock#$work/run/hc.sock#" \
    -e "s#unix:/run/php/php8.2-fpm.sock#unix:$work/run/fpm.sock#" \
    -e "s#root /srv/www;#root $work/www;#" \
    -e "s#listen 80;#listen 127.0.0.1:$ours_port;#" \
    nginx-conf/http-conditional-php-fpm.conf > "$work/nginx/ours.conf"
{ bench_nginx_conf_head "$work/nginx"; cat <<EOF
    include $work/nginx/ours.conf;
    upstream fpm_direct { server unix:$work/run/fpm.sock; }
    server {
        listen 127.0.0.1:$direct_port;
        root $work/www;
        location ~ \.php$ { fastcgi_pass fpm_direct; include $work/nginx/params.conf; }
    }
}
EOF
} > "$work/nginx/nginx.conf"
bench_start nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" \
  -g "daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;"
ours=http://127.0.0.1:$ours_port
direct=http://127.0.0.1:$direct_port
for _ in $(seq 100); do curl -s -o /dev/null "$direct/page.php" && break; sleep 0.1; done

fail() { echo "bench/php-fpm.sh: $*" >&2; cat "$work/nginx/error.log" "$work/run/fpm-error.log" >&2; exit 1; }
etag_of() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' "${@:2}" "$1"; }
[ "$(curl -s "$ours/page.php")" = "$(curl -s "$direct/page.php")" ] || fail "the page differs through the responder"
size=$(curl -s "$direct/page.php" | wc -c)
[ "$size" -ge 15000 ] || fail "the page is only $size bytes"
page_tag=$(etag_of "$ours/page.php")
[ "$(status_of "$ours/page.php" -H "If-None-Match: $page_tag")" = 304 ] || fail "no 304 from the responder"
orig_tag=$(etag_of "$direct/original.php")
[ "$(status_of "$direct/original.php" -H "If-None-Match: $orig_tag")" = 304 ] || fail "no 304 from the original library"
heavy_tag=$(etag_of "$direct/heavy.php")
[ "$(status_of "$direct/heavy.php" -H "If-None-Match: $heavy_tag")" = 304 ] || fail "no 304 from the heavy page"

served=0
errors_seen=
bench_counted=$ours
rss() { bench_rss; }
rps() { bench_rps "$@"; }
rss_start=$(rss)
# Other work on the machine changes the ratios (a starved php-fpm hides the hop's cost): say it.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
wrk -t2 -c"$connections" -d1s "$ours/page.php" >/dev/null
wrk -t2 -c"$connections" -d1s "$direct/page.php" >/dev/null
echo "bench/php-fpm.sh: running, about $(((4 * ${ROUNDS:-3} + 2) * (${duration%s} + 1) + 20)) s" >&2
# Where the responder's forwarded 200s were exchanged (a build without the family says 0).
sample() { curl -s "http://127.0.0.1:$metrics_port/metrics" | sed -n "s/^http_conditional_$1 //p" | awk '{ s += $1 } END { print s + 0 }'; }
# ROUNDS (default 3) interleaved rounds of the four rows the ratios are made of: each ratio is
# the median of the rounds' own ratios, so a burst of other work falls on both sides of it.
rounds=${ROUNDS:-3}
runs_before=$(sample 'script_runs_total{backend="fastcgi"}')
task_before=$(sample 'upstream_task_exchanges_total{.*finished="task"}')
opened_before=$(sample 'upstream_connections_opened_total{.*}')
d200s= o200s= o304s= g304s=
for _ in $(seq "$rounds"); do
  rps direct200 "$direct/page.php"; d200s="$d200s $RPS"
  rps ours200 "$ours/page.php"; o200s="$o200s $RPS"
  rps ours304 -H "If-None-Match: $page_tag" "$ours/page.php"; o304s="$o304s $RPS"
  rps orig304 -H "If-None-Match: $orig_tag" "$direct/original.php"; g304s="$g304s $RPS"
done
on_task=$(( $(sample 'upstream_task_exchanges_total{.*finished="task"}') - task_before ))
forwarded=$(( $(sample 'script_runs_total{backend="fastcgi"}') - runs_before ))
opened=$(( $(sample 'upstream_connections_opened_total{.*}') - opened_before ))
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }
ratios() { python3 -c "import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); print(' '.join(f'{float(x) / float(y):.2f}' for x, y in zip(a, b)))" "$1" "$2"; }
r200s=$(ratios "$o200s" "$d200s")
r304s=$(ratios "$o304s" "$g304s")
# shellcheck disable=SC2086 # the lists are words on purpose
{ direct200=$(median $d200s); ours200=$(median $o200s); ours304=$(median $o304s); orig304=$(median $g304s); }
rps heavy304 -H "If-None-Match: $heavy_tag" "$direct/heavy.php"; heavy304=$RPS
rps direct200b "$direct/page.php"; direct200b=$RPS
while [ "$served" -lt 100000 ]; do rps ours304 -H "If-None-Match: $page_tag" "$ours/page.php"; done
rss_end=$(rss)
kill -0 "$hc_pid" || fail "the responder died"

counts=
if [ -n "${COUNTS:-}" ]; then
  bench_need strace:strace perf:linux-perf
  requests_in() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p'; }
  group_pids() { pgrep -g "$1" | paste -sd, -; }
  fpm_group=${bench_pids[0]}
  nginx_group=${bench_pids[-1]}
  perf stat -x, -e context-switches -p "$hc_pid" -o "$work/hc.stat" & p1=$!
  perf stat -x, -e context-switches -p "$(group_pids "$fpm_group")" -o "$work/fpm.stat" & p2=$!
  perf stat -x, -e context-switches -p "$(group_pids "$nginx_group")" -o "$work/nginx.stat" & p3=$!
  sleep 0.5
  n=$(wrk -t2 -c"$connections" -d3s "$ours/page.php" | requests_in)
  kill -INT $p1 $p2 $p3; wait $p1 $p2 $p3 || true
  switches() { python3 -c "import sys; print(f'{int(sys.argv[1]) / int(sys.argv[2]):.2f}')" "$(grep ',context-switches' "$1" | cut -d, -f1)" "$n"; }
  strace -f -c -p "$hc_pid" -o "$work/strace.txt" 2>/dev/null & s1=$!
  sleep 1
  m=$(wrk -t2 -c"$connections" -d3s "$ours/page.php" | requests_in)
  kill -INT $s1; wait $s1 || true
  calls=$(python3 - "$work/strace.txt" "$m" <<'PY'
import sys
n = int(sys.argv[2])
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[3].isdigit() and f[-1] not in ("total", "syscall"):
        rows.append((int(f[3]) / n, f[-1]))
for per, name in sorted(rows, reverse=True):
    if per >= 0.05:
        print(f"| {name} | {per:.2f} |")
print(f"| (all) | {sum(p for p, _ in rows):.2f} |")
PY
)
  counts="
Per request of the page's 200 through the responder (wrk, $connections connections; load average $(cut -d' ' -f1 /proc/loadavg)):
context switches: responder $(switches "$work/hc.stat"), php-fpm $(switches "$work/fpm.stat"), nginx $(switches "$work/nginx.stat") (over $n requests).

| The responder's system call | per request (over $m requests, strace -f -c) |
|------|------:|
$calls
"
fi

# shellcheck disable=SC2086
r200=$(median $r200s)
r200b=$(ratio "$ours200" "$direct200b")
# shellcheck disable=SC2086
r304=$(median $r304s)
rheavy=$(ratio "$ours304" "$heavy304")
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.1f}')" "$1"; }
cat <<EOF
## nginx → http-conditional → php-fpm (bench/php-fpm.sh)

wrk, $connections connections, $duration per case, $rounds interleaved rounds (medians), 127.0.0.1, $(nproc) cores (load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end); php-fpm $(php-fpm8.2 -v | head -1 | cut -d' ' -f2) (Debian's php.ini, opcache $(php -r 'echo function_exists("opcache_get_status") ? "loaded" : "absent";')), a static pool of 4.
The page is $size bytes of HTML rendered by PHP from a JSON file it depends on.

| Case | req/s |
|------|------:|
| nginx → php-fpm direct, the page's 200 | $direct200 (rounds:$d200s) |
| nginx → http-conditional → php-fpm, the page's 200 | $ours200 (rounds:$o200s) |
| nginx → php-fpm direct, the page's 200 (again, after the others) | $direct200b |
| nginx → http-conditional, the page's declared 304 (php-fpm not contacted) | $ours304 (rounds:$o304s) |
| nginx → php-fpm, the original library's 304 (a trivial page) | $orig304 (rounds:$g304s) |
| nginx → php-fpm, a page's own 304 after its set-up (includes, config, SQLite, then the library) | $heavy304 |

| Ratio | Value | Target |
|-------|------:|--------|
| our 200 / php-fpm direct 200 | $r200 (rounds: $r200s; $r200b against the last direct run) | ≥ 0.85 ($(verdict "$r200" 0.85)) |
| our 304 / the original library's 304 in php-fpm | $r304 (rounds: $r304s) | ≥ 1.5 ($(verdict "$r304" 1.5)) |
| our 304 / a set-up page's own 304 in php-fpm | $rheavy | |

Of the $forwarded pages the responder forwarded in its 200 run, $on_task were exchanged and answered on the connection's task (no blocking thread), over $opened new connections to php-fpm.
The responder ran with: ${HC_ARGS---max-children 4}.
Responder RSS: $(mib "$rss_start") MiB at start, $(mib "$rss_end") MiB after $served requests through it.
wrk errors: ${errors_seen:-none}.
$counts
EOF
