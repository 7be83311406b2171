#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` and prints the .deb's path as its last line.
#
# The binary is linked statically: CGI mode starts once per request, and most of a dynamic
# binary's start-up is the loader. crt-static is set only for the explicit target, through that
# target's rustflags: proc-macros (clap's derive) are built for the host and stay dynamic, which
# crt-static set for the host would break.
#
# Linked twice, for the same reason (bench/RESULTS.md, "CGI mode"): the second link lays out the
# functions a CGI 304 and 200 run side by side (scripts/symbol-order.sh, from a profile of the
# first link), so a start touches fewer pages of code. Both links pack the static-pie's
# relative relocations (DT_RELR, applied by glibc's static start-up since 2.36): a smaller
# table to read at each start. And both pull in posix_spawn_file_actions_addchdir_np: std
# refers to it weakly, which a static link does not take from libc.a, and without it std starts
# each script (run in its own folder) by fork instead of posix_spawn, copying the wrapper's page
# tables and faulting its pages in again after. The link flags go to the binary's own crate
# (`cargo rustc`), so the dependencies are not rebuilt for them.
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
link=(-C link-arg=-Wl,-z,pack-relative-relocs
  -C link-arg=-Wl,--undefined=posix_spawn_file_actions_addchdir_np)
build() { cargo rustc --quiet --release --target "$target" --bin http-conditional -- "$@" >&2; }
build "${link[@]}"
order=$PWD/target/$target/symbol-order.txt
bash scripts/symbol-order.sh "target/$target/release/http-conditional" > "$order"
build "${link[@]}" -C "link-arg=-Wl,--symbol-ordering-file=$order" \
  -C link-arg=-Wl,--no-warn-symbol-ordering
# cargo deb prints the archive's path on stdout; everything else goes to stderr.
deb=$(cargo deb --quiet --no-build --target "$target" | tail -n 1)
[ -f "$deb" ] || { echo "package.sh: cargo deb gave no archive (got: $deb)" >&2; exit 1; }
echo "$deb"
