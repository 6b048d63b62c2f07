#!/usr/bin/env bash
# check.sh - everything CI runs, in order; stops at the first failure.
#   1. cargo fmt --check
#   2. cargo clippy --all-targets --profile ci -- -D warnings
#   3. cargo test --profile ci   (optimised like release, because the dedup
#      tests push 256 MiB through the filesystem, but without LTO: see
#      Cargo.toml; mounted tests need root and /dev/fuse, see tests/common)
#   4. scripts/pjdfstest.sh   (against target/ci/tresor)
#   5. scripts/package.sh + scripts/package-test.sh   (the Debian package of
#      the tested binary: installed, `man tresor`, completions, the unit
#      template, a mount from /etc/fstab; needs root and cargo-deb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets --profile ci -- -D warnings"
cargo clippy --all-targets --profile ci -- -D warnings
step "cargo test --profile ci --no-fail-fast -- --show-output"
cargo test --profile ci --no-fail-fast -- --show-output
step "scripts/pjdfstest.sh"
TRESOR_BIN=$PWD/target/ci/tresor scripts/pjdfstest.sh
step "Debian package: build, install, mount from /etc/fstab"
PROFILE=ci scripts/package.sh
scripts/package-test.sh
step "all checks passed"
