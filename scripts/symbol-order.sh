#!/usr/bin/env bash
# Prints a symbol ordering file for the linker (lld --symbol-ordering-file): the functions the
# given build of the binary runs for CGI mode's common requests, in the order callgrind met them.
#
# Why: CGI mode starts the binary once per request, and from a file written in 4 KiB pieces (as
# dpkg writes it) every 64 KiB window of code it touches is a page fault of its own. Laid out
# together, the functions of a 304 and a 200 fit in a few windows (bench/RESULTS.md, "CGI
# mode"). The names are the build's own (hashes included), so the file is made afresh from the
# build it will order; a function missing from it is only placed after the listed ones.
#
# usage: scripts/symbol-order.sh BINARY > order.txt
set -euo pipefail
bin=$(realpath "$1")
if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing: valgrind" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A declared page, and the wrapper under the name an Apache `Action` gives it.
printf '#!/bin/sh\nprintf '"'"'Content-Type: text/html\\n\\n<p>page</p>\\n'"'"'\n' > "$work/page.cgi"
chmod 755 "$work/page.cgi"
echo '{"cache_seconds": 0}' > "$work/page.cgi.conditional.json"
ln -s "$bin" "$work/http-conditional"

cgi=(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 SERVER_PROTOCOL=HTTP/1.1
  REQUEST_METHOD=GET QUERY_STRING=)
etag=$("${cgi[@]}" SCRIPT_FILENAME="$work/page.cgi" "$bin" | tr -d '\r' | sed -n 's/^ETag: //p')
[ -n "$etag" ] || { echo "symbol-order.sh: the page's 200 had no ETag" >&2; exit 1; }

profile() { # name, status, environment...: one run under callgrind (the wrapper, not the script)
  local name=$1 status=$2; shift 2
  "${cgi[@]}" "$@" valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.cg" \
    "$bin" >"$work/$name.out" 2>"$work/$name.log" || { cat "$work/$name.log" >&2; exit 1; }
  head -n 1 "$work/$name.out" | grep -q "^Status: $status" ||
    { echo "symbol-order.sh: the $name run answered $(head -n 1 "$work/$name.out")" >&2; exit 1; }
}
# The 304 first: its functions are the hottest and go first.
profile 304 304 SCRIPT_FILENAME="$work/page.cgi" HTTP_IF_NONE_MATCH="$etag"
profile action-304 304 SCRIPT_FILENAME="$work/http-conditional" PATH_TRANSLATED="$work/page.cgi" \
  HTTP_IF_NONE_MATCH="$etag"
profile 200 200 SCRIPT_FILENAME="$work/page.cgi"

# callgrind names each function in full once ("fn=(id) name", "cfn=(id) name"), then by id;
# code without a symbol is named by its address, and a recursion cycle gets a 'N suffix.
for name in 304 action-304 200; do
  sed -n -E 's/^c?fn=\([0-9]+\) (.*)$/\1/p' "$work/$name.cg"
done | sed -E "s/'[0-9]+\$//" | grep -v -E '^(\(below main\)|0x[0-9a-f]+)$' | awk '!seen[$0]++'
