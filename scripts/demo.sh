#!/usr/bin/env bash
# Builds the wrapper and shows what a client sees for the bundled examples: a 200, then a 304
# for the same page without running the script; first in CGI mode (as Apache runs it), then
# through `serve` over real HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi
cargo build --release --quiet
bin=$PWD/target/release/http-conditional
page=$PWD/examples/article.cgi

cgi() { env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SCRIPT_FILENAME="$page" "$@" "$bin"; }

echo "== CGI mode: first request (the script runs) =="
first=$(cgi)
printf '%s\n' "$first" | sed -n '1,/^\r\{0,1\}$/p'
etag=$(printf '%s\n' "$first" | tr -d '\r' | sed -n 's/^ETag: //p')
echo "== CGI mode: again with If-None-Match: $etag (the script does not run) =="
cgi HTTP_IF_NONE_MATCH="$etag"

log=$(mktemp)
server=
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
# The first free port from 18080 on: a port taken by something else makes serve exit at once.
for port in $(seq "${PORT:-18080}" 18120); do
  "$bin" serve --root examples --listen "127.0.0.1:$port" 2>"$log" &
  server=$!
  for _ in $(seq 50); do
    kill -0 "$server" 2>/dev/null || break
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break 2
    sleep 0.1
  done
done
echo "== serve --root examples on 127.0.0.1:$port =="
echo "-- GET /article.cgi"
curl -s -D - -o /dev/null "http://127.0.0.1:$port/article.cgi"
etag=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/article.cgi" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')
echo "-- GET /article.cgi with If-None-Match: $etag"
curl -s -D - -o /dev/null -H "If-None-Match: $etag" "http://127.0.0.1:$port/article.cgi"
echo "-- GET /article.cgi with Accept-Encoding: gzip"
curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/article.cgi"
echo "-- the server's log"
cat "$log"
