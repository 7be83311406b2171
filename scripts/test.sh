#!/usr/bin/env bash
# Runs every test. Installs what the tests drive (nginx, Apache, php-cgi, php-fpm, curl, python3,
# lintian, sqlite3, gitweb, DokuWiki, prometheus with promtool, varnish, squid) when missing; the
# tests fail rather than skip under CI=true when a server or tool is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in nginx:nginx apache2:apache2 php-cgi:php-cgi php-fpm8.2:php-fpm curl:curl python3:python3 ps:procps md5sum:coreutils sqlite3:sqlite3 git:git fcgiwrap:fcgiwrap /usr/share/gitweb/gitweb.cgi:gitweb /usr/share/dokuwiki/bin/render.php:dokuwiki prometheus:prometheus varnishd:varnish squid:squid; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
# tests/package.rs: lintian, dpkg-dev for cargo-deb (scripts/package.sh installs cargo-deb), and
# valgrind for the profile scripts/symbol-order.sh orders the binary's functions by.
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts the packaged servers; the tests run their own on free ports.
for svc in nginx apache2 php8.2-fpm prometheus varnish squid; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
log=$(mktemp)
cargo test --all-targets 2>&1 | tee "$log"
# One plain summary line over all test binaries.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
