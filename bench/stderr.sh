#!/usr/bin/env bash
# The stderr relay (CGI mode), side by side in one run: a script writing 40 MB of stderr as one
# line, the same 40 MB as 80-byte lines, and the script alone with stderr to /dev/null. A relay
# linear in the bytes gives a long/short ratio near 1 (before the fix it grew with the line's
# length: 8 MB on one line took 1.2 s, 40 MB outlasted the 30 s timeout).
# Prints a markdown section on stdout. PROFILE=debug measures the debug build (no release build).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_need hyperfine:hyperfine python3:python3
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
bin=${CARGO_TARGET_DIR:-$PWD/target}/$profile/http-conditional
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bytes=40000000
printf '#!/bin/sh\nhead -c %s /dev/zero | tr "\\0" x >&2\nprintf "Content-Type: text/plain\\n\\nok"\n' \
  "$bytes" > "$work/long.cgi"
printf '#!/bin/sh\nhead -c %s /dev/zero | tr "\\0" x | fold -w 79 >&2\nprintf "Content-Type: text/plain\\n\\nok"\n' \
  "$((bytes * 79 / 80))" > "$work/short.cgi"
chmod 755 "$work/long.cgi" "$work/short.cgi"
export GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 QUERY_STRING=
export CONDITIONAL_TIMEOUT=60
for page in long short; do
  [ "$(SCRIPT_FILENAME=$work/$page.cgi "$bin" 2>/dev/null | head -1 | tr -d '\r')" = "Status: 200 OK" ]
done

hyperfine --style none --warmup 1 --runs "${RUNS:-5}" --export-json "$work/r.json" \
  "SCRIPT_FILENAME=$work/long.cgi $bin 2>/dev/null >/dev/null" \
  "SCRIPT_FILENAME=$work/short.cgi $bin 2>/dev/null >/dev/null" \
  "$work/long.cgi 2>/dev/null >/dev/null" >/dev/null
mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][int(sys.argv[2])]['mean'])" "$work/r.json" "$1"; }
long=$(mean 0); short=$(mean 1); bare=$(mean 2)

echo "## stderr relay (CGI mode, $profile build)"
echo
echo "| 40 MB of stderr | mean (s) | ratio |"
echo "|---|---|---|"
echo "| one line, through the wrapper | $(ratio "$long" 1 3) | long / short lines: $(ratio "$long" "$short") |"
echo "| 80-byte lines, through the wrapper | $(ratio "$short" 1 3) | |"
echo "| the script alone, stderr to /dev/null | $(ratio "$bare" 1 3) | one line / script alone: $(ratio "$long" "$bare") |"
