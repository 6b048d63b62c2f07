#!/usr/bin/env bash
# bench-space-release.sh - how soon deleted space comes back to the host's
# disk (issue 15): in a mounted local-only vault, write 1 GiB of random data,
# `rm` it, and time until `du -sb` of the vault's store has dropped by it.
#
# Usage (as root): scripts/bench-space-release.sh      REPS=1 scripts/bench-space-release.sh
#
# Per repetition, on a fresh vault:
#   same-session  write (cp from tmpfs, fsync), rm, poll du of VAULT/store
#                 every 0.1 s until it is below (before the write + 64 MiB)
#   after-remount write, unmount (the unmount takes a local index copy that
#                 references the file), mount, then rm and poll as above
# Prints each time and the median per case. Fails if du has not dropped after
# TIMEOUT seconds.
#
# Environment: REPS (3), TIMEOUT (120), TRESOR_BIN (target/release/tresor,
# else target/ci/tresor), BENCH_WORKDIR (/tmp: the disk under test),
# BENCH_INPUTS (/dev/shm/tresor-bench: the 1 GiB input in RAM, shared with
# scripts/bench.sh; delete when done).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
TIMEOUT=${TIMEOUT:-120}
TRESOR_BIN=${TRESOR_BIN:-$ROOT/target/release/tresor}
[[ -x $TRESOR_BIN ]] || TRESOR_BIN=$ROOT/target/ci/tresor
BENCH_INPUTS=${BENCH_INPUTS:-/dev/shm/tresor-bench}
MIB=$((1024 * 1024))

log() { echo "[space-release $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[[ $(id -u) -eq 0 ]] || die "run as root (mounts)"
[[ -x $TRESOR_BIN ]] || die "$TRESOR_BIN not built: cargo build --release"
command -v fusermount3 >/dev/null || die "missing fusermount3: apt-get install -y fuse3"

mkdir -p "$BENCH_INPUTS"
BIG=$BENCH_INPUTS/rand-1g.bin
if [[ ! -f $BIG || $(stat -c %s "$BIG") -ne 1073741824 ]]; then
    log "generating $BIG"
    head -c 1G /dev/urandom >"$BIG.tmp" && mv "$BIG.tmp" "$BIG"
fi

WORK=$(mktemp -d -p "${BENCH_WORKDIR:-/tmp}" tresor-space.XXXXXX)
PF=$WORK/passphrase
echo "bench-passphrase-Zq8r2" >"$PF"
M=$WORK/mnt
mkdir -p "$M"

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
do_mount() {
    "$TRESOR_BIN" mount --vault "$1" --passphrase-file "$PF" "$M" </dev/null >>"$WORK/mount.log" 2>&1 ||
        { tail -20 "$WORK/mount.log" >&2; die "mount failed"; }
    local i
    for ((i = 0; i < 600; i++)); do is_mounted "$M" && return 0; sleep 0.1; done
    die "$M not mounted after 60 s"
}
daemon_pid() { # the process naming MNT in its argv that holds /dev/fuse
    local pid fd
    for pid in $(pgrep -f -- "$M" || true); do
        for fd in /proc/"$pid"/fd/*; do
            [[ "$(readlink "$fd" 2>/dev/null)" == /dev/fuse ]] && { echo "$pid"; return; }
        done
    done
}
do_umount() { # returns after the daemon has exited
    local pid i
    pid=$(daemon_pid)
    "$TRESOR_BIN" unmount "$M" >>"$WORK/mount.log" 2>&1 || die "unmount failed"
    for ((i = 0; i < 1200; i++)); do
        [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    die "daemon $pid alive 60 s after unmount"
}
cleanup() {
    local rc=$?
    is_mounted "$M" && { fusermount3 -u "$M" 2>/dev/null || fusermount3 -u -z "$M" 2>/dev/null || true; }
    sleep 0.5
    is_mounted "$M" && { log "leaving $WORK: $M still mounted"; exit "$rc"; }
    rm -rf --one-file-system "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

du_store() { du -sb "$1/store" | cut -f1; }

# one CASE REP: prints the seconds from rm until du dropped
one() {
    local case=$1 rep=$2 v=$WORK/vault-$1-$2 before written t0 now i
    "$TRESOR_BIN" init --vault "$v" --passphrase-file "$PF" >/dev/null </dev/null
    do_mount "$v"
    head -c $((8 * MIB)) "$BIG" >"$M/keep"
    sync -f "$M"
    before=$(du_store "$v")
    cp "$BIG" "$M/big"
    python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$M/big"
    if [[ $case == after-remount ]]; then
        do_umount
        do_mount "$v"
    fi
    written=$(du_store "$v")
    ((written >= before + 1000 * MIB)) || die "store grew by only $((written - before)) B"
    t0=$EPOCHREALTIME
    rm "$M/big"
    for ((i = 0; ; i++)); do
        now=$(du_store "$v")
        ((now < before + 64 * MIB)) && break
        ((i < TIMEOUT * 10)) || die "$case: du still $now B ${TIMEOUT} s after rm (before $before, written $written)"
        sleep 0.1
    done
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", b - a }'
    log "$case rep$rep: store $before → $written → $now B"
    cmp <(head -c $((8 * MIB)) "$BIG") "$M/keep" || die "keep changed"
    do_umount
}

declare -A times
for ((rep = 1; rep <= REPS; rep++)); do
    for case in same-session after-remount; do
        s=$(one "$case" "$rep")
        log "$case rep$rep: $s s from rm until du dropped"
        times[$case]+="$s "
    done
done
echo "| case | seconds from rm of 1 GiB until du of the store dropped (median of $REPS) | all |"
echo "|---|---:|---|"
for case in same-session after-remount; do
    med=$(tr ' ' '\n' <<<"${times[$case]}" | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    echo "| $case | $med | ${times[$case]}|"
done
