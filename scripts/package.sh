#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` and prints the .deb's path as its last line.
#
# The binary is linked statically: CGI mode starts once per request, and most of a dynamic
# binary's start-up is the loader. crt-static is set only for the explicit target, through that
# target's rustflags: proc-macros (clap's derive) are built for the host and stay dynamic, which
# crt-static set for the host would break.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu

# dpkg-shlibdeps (dpkg-dev) computes Depends; cargo-deb builds the archive.
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  echo "installing: dpkg-dev" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "installing: cargo-deb" >&2
  cargo install cargo-deb --locked --quiet
fi

# Man pages and completions from the clap definition, where Cargo.toml's assets expect them.
rm -rf target/manuals
cargo run --quiet --example manuals -- target/manuals >&2

# RUSTFLAGS would override the target's rustflags (and reach the proc-macros): not here. Set
# after the manuals step, which builds for the host without --target: there the target's
# rustflags would apply to the proc-macros too.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
# cargo deb prints the archive's path on stdout; everything else goes to stderr.
deb=$(cargo deb --quiet --target "$target" | tail -n 1)
[ -f "$deb" ] || { echo "package.sh: cargo deb gave no archive (got: $deb)" >&2; exit 1; }
echo "$deb"
