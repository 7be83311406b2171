#!/usr/bin/env bash
# CGI mode, side by side in one run: the 304 path against /bin/true spawned the same way (the
# binary of the Debian package, statically linked, and `cargo build --release`), the
# 200 path against the bare script, our 304 against php-cgi running the original library, and a
# 1 GiB body through the wrapper (peak RSS; gzip throughput against gzip -6 on the same bytes).
# Prints a markdown section on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_need hyperfine:hyperfine php-cgi:php-cgi /usr/bin/time:time gzip:gzip python3:python3
cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target_dir/release/http-conditional
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The binary the Debian package installs (linked statically: most of a small binary's start-up
# is the dynamic loader), taken out of the .deb, as installed.
deb=$(bash scripts/package.sh 2>/dev/null | tail -n 1)
dpkg-deb -x "$deb" "$work/package"
static_bin=$work/package/usr/bin/http-conditional

# A 20 KB sh page, declared with a sidecar.
bench_write_page "$work"
cp bench/original/conditional.php "$work/original.php"
touch -d @1700000000 "$work/original.php"

export GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 QUERY_STRING=
etag=$(SCRIPT_FILENAME=$work/page.cgi "$bin" | tr -d '\r' | sed -n 's/^ETag: //p')
php_etag=$(REDIRECT_STATUS=200 SCRIPT_FILENAME=$work/original.php php-cgi | tr -d '\r' | sed -n 's/^ETag: //p')
[ "$(SCRIPT_FILENAME=$work/page.cgi HTTP_IF_NONE_MATCH=$etag "$bin" | head -1 | tr -d '\r')" = "Status: 304 Not Modified" ]
REDIRECT_STATUS=200 SCRIPT_FILENAME=$work/original.php HTTP_IF_NONE_MATCH=$php_etag php-cgi | grep -q '^Status: 304'

mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][int(sys.argv[2])]['mean'])" "$@"; }
ms() { python3 -c "import sys; print(f'{float(sys.argv[1])*1000:.2f}')" "$1"; }

# Side by side in blocks: each block runs every command (in an order rotated block by block)
# for BLOCK_RUNS runs, so a burst of other work on the machine falls on all of them alike.
blocks=${BLOCKS:-20}
run_blocks() { # json prefix, commands...
  local prefix=$1; shift
  local cmds=("$@") order b i
  for b in $(seq "$blocks"); do
    order=()
    for i in $(seq 0 $((${#cmds[@]} - 1))); do order+=("${cmds[$(((i + b) % ${#cmds[@]}))]}"); done
    hyperfine -N --warmup 3 --runs "${BLOCK_RUNS:-20}" --export-json "$prefix.$b.json" "${order[@]}" >/dev/null 2>&1
  done
}
# Over the blocks of PREFIX: the median of A's mean (one command), or of A / B, or of
# (A - C) / B (A's time over C's, against B's), each taken inside one block.
block_median() { # prefix a [b [c]]
  python3 - "$@" <<'PY'
import glob, json, statistics, sys
prefix, names = sys.argv[1], sys.argv[2:]
values = []
for path in glob.glob(prefix + ".*.json"):
    mean = {r["command"]: r["mean"] for r in json.load(open(path))["results"]}
    a = mean[names[0]]
    if len(names) == 1:
        values.append(a)
    else:
        values.append((a - (mean[names[2]] if len(names) > 2 else 0)) / mean[names[1]])
print(statistics.median(values))
PY
}
# The ratio column: a block median with two decimals and the middle half of the blocks.
block_ratio() { # prefix a b [c]
  python3 - "$(block_median "$@")" "$@" <<'PY'
import glob, json, statistics, sys
median, prefix, names = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
values = []
for path in glob.glob(prefix + ".*.json"):
    mean = {r["command"]: r["mean"] for r in json.load(open(path))["results"]}
    values.append((mean[names[0]] - (mean[names[2]] if len(names) > 2 else 0)) / mean[names[1]])
q = statistics.quantiles(values, n=4)
print(f"{median:.2f}× (middle half {q[0]:.2f}–{q[2]:.2f})")
PY
}

# GATEWAY_INTERFACE as every server sets it: the wrapper then takes CGI mode's own short path.
GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SCRIPT_FILENAME=$work/page.cgi HTTP_IF_NONE_MATCH=$etag \
  run_blocks "$work/304" "$bin" /bin/true "$static_bin"
GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET SCRIPT_FILENAME=$work/page.cgi \
  run_blocks "$work/200" "$bin" "$work/page.cgi" "$static_bin" /bin/true
# Minor page faults of one start (the fewest of five), beside the times: from a file written in
# 4 KiB pieces, as dpkg-deb writes the package's, each code page touched can be one.
faults() {
  for _ in 1 2 3 4 5; do /usr/bin/time -f '%R' -o "$work/faults.txt" "$@" >/dev/null; cat "$work/faults.txt"; done |
    sort -n | head -n 1
}
export SCRIPT_FILENAME=$work/page.cgi
faults304=$(HTTP_IF_NONE_MATCH=$etag faults "$bin"); static_faults304=$(HTTP_IF_NONE_MATCH=$etag faults "$static_bin")
true_faults=$(faults /bin/true); faults200=$(faults "$bin"); static_faults200=$(faults "$static_bin")
bare_faults=$(faults "$work/page.cgi")
unset SCRIPT_FILENAME
SCRIPT_FILENAME=$work/original.php REDIRECT_STATUS=200 HTTP_IF_NONE_MATCH=$php_etag \
  hyperfine -N --warmup 5 --runs "${PHP_RUNS:-100}" --export-json "$work/php.json" php-cgi >/dev/null 2>&1

ours304=$(block_median "$work/304" "$bin"); true_=$(block_median "$work/304" /bin/true)
static304=$(block_median "$work/304" "$static_bin")
ours200=$(block_median "$work/200" "$bin"); bare=$(block_median "$work/200" "$work/page.cgi")
static200=$(block_median "$work/200" "$static_bin"); true200=$(block_median "$work/200" /bin/true)
# What the wrapper adds to the script's own run, against a bare process start.
static_overhead200=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$static200" "$bare")
php304=$(mean "$work/php.json" 0)

# 1 GiB of base64 text (compressible like a page, not trivially).
head -c 786432 /dev/urandom | base64 -w 100 > "$work/chunk"
python3 - "$work/chunk" "$work/big.dat" <<'PY'
import sys
chunk = open(sys.argv[1], 'rb').read()
left = 1 << 30
with open(sys.argv[2], 'wb') as out:
    while left:
        piece = chunk[:left]
        out.write(piece)
        left -= len(piece)
PY
printf "#!/bin/sh\nprintf 'Content-Type: text/plain\\\\n\\\\n'\nexec cat '%s'\n" "$work/big.dat" > "$work/big.cgi"
chmod +x "$work/big.cgi"
# A generous timeout: on a loaded machine 1 GiB through gzip may take longer than the default 30 s.
echo '{"compress": true, "timeout": 600}' > "$work/big.cgi.conditional.json"
measure() { # prints "max_rss_kib seconds"
  /usr/bin/time -f '%M %e' -o "$work/time.txt" "$@" > /dev/null
  cat "$work/time.txt"
}
read -r rss_id secs_id < <(SCRIPT_FILENAME=$work/big.cgi measure "$bin")
read -r rss_gz secs_gz < <(SCRIPT_FILENAME=$work/big.cgi HTTP_ACCEPT_ENCODING=gzip measure "$bin")
read -r _ secs_gzip6 < <(measure gzip -6 -c "$work/big.dat")
mbps() { python3 -c "import sys; print(f'{1024/float(sys.argv[1]):.0f}')" "$1"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/1024:.1f}')" "$1"; }

cat <<MD
## CGI mode (bench/cgi.sh)

hyperfine -N on this machine ($(nproc) cores), same environment: $blocks blocks, each running every
command of its table row group ${BLOCK_RUNS:-20} times in an order rotated block by block; times
are medians of the blocks' means, ratios medians of the ratios inside each block (with the
middle half of the blocks).

The Debian package's binary is run as \`dpkg-deb -x\` wrote it (in 4 KiB pieces, as dpkg
installs it); page faults are minor faults of one start (the fewest of five, /usr/bin/time).

| measurement | ours | baseline | ratio | page faults (ours / baseline) | target |
|---|---|---|---|---|---|
| 304 (declared script, matching If-None-Match) vs \`/bin/true\`, \`cargo build --release\` | $(ms "$ours304") ms | $(ms "$true_") ms | **$(block_ratio "$work/304" "$bin" /bin/true)** wall time | $faults304 / $true_faults | ≤ 1.6× |
| the same 304, the Debian package's binary (static; README: "Install") | $(ms "$static304") ms | $(ms "$true_") ms | **$(block_ratio "$work/304" "$static_bin" /bin/true)** wall time | $static_faults304 / $true_faults | ≤ 1.2× |
| 200 (20 KB sh page) vs the same script run bare, \`cargo build --release\` | $(ms "$ours200") ms | $(ms "$bare") ms | **$(block_ratio "$work/200" "$bin" "$work/page.cgi")** wall time | $faults200 / $bare_faults | ≤ 1.3× |
| the same 200, the Debian package's binary | $(ms "$static200") ms | $(ms "$bare") ms | **$(block_ratio "$work/200" "$static_bin" "$work/page.cgi")** wall time | $static_faults200 / $bare_faults | ≤ 1.3× |
| the package's 200 minus the bare script's, vs \`/bin/true\` (same run) | $(ms "$static_overhead200") ms | $(ms "$true200") ms | **$(block_ratio "$work/200" "$static_bin" /bin/true "$work/page.cgi")** | | ≤ 1.5× |
| our 304 vs php-cgi running the original library's 304 | $(ms "$ours304") ms | $(ms "$php304") ms | **$(ratio "$php304" "$ours304")×** faster | | ≥ 10× |

1 GiB body through the wrapper (declared, \`compress: true\`):

| coding | peak RSS | time | throughput | target |
|---|---|---|---|---|
| identity | $(mib "$rss_id") MiB | ${secs_id} s | $(mbps "$secs_id") MiB/s | RSS < 16 MiB |
| gzip (ours) | $(mib "$rss_gz") MiB | ${secs_gz} s | $(mbps "$secs_gz") MiB/s | RSS < 16 MiB, ≥ gzip -6 |
| \`gzip -6\` on the same bytes | | ${secs_gzip6} s | $(mbps "$secs_gzip6") MiB/s | |

MD
