#!/usr/bin/env bash
# check.sh - everything CI runs, in order; stops at the first failure.
#   1. cargo fmt --check
#   2. cargo clippy --all-targets -- -D warnings
#   3. cargo test --release   (release: the dedup tests push 256 MiB through
#      the filesystem; mounted tests need root and /dev/fuse, see tests/common)
#   4. scripts/pjdfstest.sh   (against target/release/tresor)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
step "cargo test --release --no-fail-fast -- --show-output"
cargo test --release --no-fail-fast -- --show-output
step "scripts/pjdfstest.sh"
TRESOR_BIN=$PWD/target/release/tresor scripts/pjdfstest.sh
step "all checks passed"
