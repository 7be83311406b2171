#!/usr/bin/env bash
# Runs every benchmark and writes bench/RESULTS.md. Each part prints its own markdown section;
# ratios inside a section were measured side by side in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/RESULTS.md
{
  echo "# Benchmark results"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), a shared machine: compare the"
  echo "ratios inside one table, not absolute figures across tables or runs."
  echo
  for part in cgi fastcgi php-fpm apache serve rules stderr scale-out; do
    if [ -f "bench/$part.sh" ]; then
      bash "bench/$part.sh" || echo "(bench/$part.sh failed)"
      echo
    fi
  done
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
