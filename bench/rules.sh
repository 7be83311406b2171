#!/usr/bin/env bash
# Site rules against sidecars behind nginx, side by side in one run, with wrk: 1,000 pages
# declared by one `[[rule]]` of a rules file (`fastcgi --rules`, no sidecars), and the same
# 1,000 pages declared by 1,000 sidecars (`fastcgi` without --rules). Each responder sits
# behind its own copy of the shipped nginx-conf/ block in one nginx; wrk cycles through all
# 1,000 URLs with each page's If-None-Match, so every answer is a 304 decided by the responder.
# The cases alternate for ROUNDS rounds (default 3) so that load from the shared machine falls
# on both alike. Target: the two 304 throughputs within 10 % of each other.
# Prints a markdown section on stdout. DURATION (default 5s), CONNECTIONS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
duration=${DURATION:-5s}
connections=${CONNECTIONS:-16}
rounds=${ROUNDS:-3}
pages=1000
source bench/lib.sh
bench_need nginx:nginx wrk:wrk curl:curl python3:python3

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/http-conditional

work=$(mktemp -d /tmp/hc-bench-rules.XXXXXX)
chmod 755 "$work"
cleanup() { bench_stop_all; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work"/{rules-www,sidecar-www,run,nginx/tmp,rules-conf,sidecar-conf}

# The same 20 KB page 1,000 times in each tree: bare under rules-www/, each with its sidecar
# under sidecar-www/. One rule declares what every sidecar says.
bench_page > "$work/page.cgi"
for i in $(seq -w 1 $pages); do
  for tree in rules-www sidecar-www; do cp "$work/page.cgi" "$work/$tree/p$i.cgi"; done
  echo '{"cache_seconds": 0}' > "$work/sidecar-www/p$i.cgi.conditional.json"
done
chmod 755 "$work"/rules-www/*.cgi "$work"/sidecar-www/*.cgi
touch -d @1700000000 "$work"/rules-www/*.cgi "$work"/sidecar-www/*.cgi
cat > "$work/site.toml" <<'EOF'
[[rule]]
match = "rules-www/*.cgi"
cache_seconds = 0
EOF
"$bin" check "$work/site.toml" >/dev/null

# As root the responder refuses to start without --user (the contract); scripts run as root
# here only because the benchmark does.
user=()
if [ "$(id -u)" = 0 ]; then user=(--user root); fi
bench_start "$bin" fastcgi --root "$work/rules-www" --listen "unix:$work/run/rules.sock" \
  --rules "$work/site.toml" "${user[@]}"
rules_pid=${bench_pids[-1]}
bench_start "$bin" fastcgi --root "$work/sidecar-www" --listen "unix:$work/run/sidecar.sock" "${user[@]}"
sidecar_pid=${bench_pids[-1]}
for sock in rules sidecar; do
  for _ in $(seq 100); do [ -S "$work/run/$sock.sock" ] && break; sleep 0.05; done
done

# nginx: the shipped server block twice, each with its own port, socket and root (the second
# copy's upstream renamed, one http block holds both).
port_of() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rules_port=$(port_of)
sidecar_port=$(port_of)
bench_shipped_nginx_block "$work/rules-conf" "$rules_port" "$work/run/rules.sock" "$work/rules-www"
bench_shipped_nginx_block "$work/sidecar-conf" "$sidecar_port" "$work/run/sidecar.sock" "$work/sidecar-www"
sed -i 's/http_conditional/http_conditional_sidecars/g' "$work/sidecar-conf/http-conditional.conf"
{ bench_nginx_conf_head "$work/nginx"; cat <<EOF
    include $work/rules-conf/http-conditional.conf;
    include $work/sidecar-conf/http-conditional.conf;
}
EOF
} > "$work/nginx/nginx.conf"
bench_start nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" \
  -g "daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;"
rules_url=http://127.0.0.1:$rules_port
sidecar_url=http://127.0.0.1:$sidecar_port
for _ in $(seq 100); do curl -s -o /dev/null "$rules_url/p0001.cgi" && break; sleep 0.1; done

fail() { echo "bench/rules.sh: $*" >&2; cat "$work/nginx/error.log" >&2; exit 1; }
# Each page's ETag, checked to give a 304: the lists wrk cycles through.
collect() {
  local url=$1 list=$2 i tag
  : > "$list"
  for i in $(seq -w 1 $pages); do
    tag=$(curl -s -D - -o /dev/null "$url/p$i.cgi" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')
    [ -n "$tag" ] || fail "$url/p$i.cgi has no ETag"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $tag" "$url/p$i.cgi")" = 304 ] ||
      fail "$url/p$i.cgi gives no 304"
    echo "/p$i.cgi $tag" >> "$list"
  done
}
echo "bench/rules.sh: collecting $((2 * pages)) ETags" >&2
collect "$rules_url" "$work/rules.list"
collect "$sidecar_url" "$work/sidecar.list"
# The rule-declared pages really are declared by the rule, not by a stray sidecar.
[ -z "$(find "$work/rules-www" -name '*.conditional.json')" ] || fail "sidecars under rules-www"

cat > "$work/cycle.lua" <<'EOF'
-- Every request a different page of the list, with that page's ETag in If-None-Match.
local requests = {}
local n = 0
function init(args)
  for line in io.lines(args[1]) do
    local path, tag = line:match("^(%S+) (.+)$")
    requests[#requests + 1] = wrk.format("GET", path, { ["If-None-Match"] = tag })
  end
end
function request()
  n = n % #requests + 1
  return requests[n]
end
EOF

errors_seen=
# Sets RPS to the requests per second of one case; anything but a 304 counts as an error.
rps() {
  local label=$1 url=$2 list=$3 out bad
  out=$(wrk -t2 -c"$connections" -d"$duration" -s "$work/cycle.lua" "$url" -- "$list")
  bad=$(echo "$out" | sed -n 's/^ *\(Non-2xx or 3xx responses: [0-9]*\|Socket errors:.*\)$/\1/p' | tr '\n' ' ')
  if [ -n "$bad" ]; then errors_seen="$errors_seen ($label) $bad;"; fi
  RPS=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
}
wrk -t2 -c"$connections" -d1s -s "$work/cycle.lua" "$rules_url" -- "$work/rules.list" >/dev/null
wrk -t2 -c"$connections" -d1s -s "$work/cycle.lua" "$sidecar_url" -- "$work/sidecar.list" >/dev/null
echo "bench/rules.sh: running, about $((2 * rounds * ${duration%s})) s" >&2
rows=
rules_all=()
sidecar_all=()
for round in $(seq "$rounds"); do
  rps "rules $round" "$rules_url" "$work/rules.list"; r=$RPS
  rps "sidecars $round" "$sidecar_url" "$work/sidecar.list"; s=$RPS
  rules_all+=("$r"); sidecar_all+=("$s")
  rows="$rows| $round | $r | $s | $(ratio "$r" "$s") |"$'\n'
done
kill -0 "$rules_pid" && kill -0 "$sidecar_pid" || fail "a responder died"
mean() { python3 -c 'import sys; v = [float(x) for x in sys.argv[1:]]; print(f"{sum(v) / len(v):.2f}")' "$@"; }
rules_mean=$(mean "${rules_all[@]}")
sidecar_mean=$(mean "${sidecar_all[@]}")
r_mean=$(ratio "$rules_mean" "$sidecar_mean")
within=$(python3 -c "import sys; r = float(sys.argv[1]); print('met' if abs(r - 1) <= 0.10 else 'NOT met')" "$r_mean")

cat <<EOF
## Site rules against sidecars, nginx → FastCGI (bench/rules.sh)

wrk -t2 -c$connections -d$duration per case, 127.0.0.1, $(nproc) cores, nginx $(nginx -v 2>&1 | sed 's#.*/##'), release build.
$pages pages (the 20 KB sh page), each request a different page with its own If-None-Match (all
304, decided by the responder): declared by one \`[[rule]]\` (\`fastcgi --rules\`, no sidecars)
against the same pages declared by $pages sidecars (\`fastcgi\` without --rules), each behind the
shipped nginx-conf/ block; the cases alternate, $rounds rounds.

| Round | one rule, 304 req/s | $pages sidecars, 304 req/s | rule / sidecars |
|------:|--------------------:|---------------------------:|----------------:|
$rows| mean | $rules_mean | $sidecar_mean | $r_mean |

Target: within 10 % of each other (0.90 ≤ rule / sidecars ≤ 1.10): $within.
wrk errors: ${errors_seen:-none}.
EOF
