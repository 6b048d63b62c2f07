#!/usr/bin/env bash
# bench.sh - tresor vs gocryptfs vs bindfs, interleaved, medians as markdown.
#
# Usage (as root): scripts/bench.sh            REPS=1 scripts/bench.sh
#
# Workloads, each on a fresh mount after `sync; echo 3 > drop_caches`:
#   seqwrite  cp of 1 GiB of random data (tmpfs) into the mount      (durable)
#   seqread   cat of that file after remount + drop caches (then an untimed cmp)
#   untar     tar -xf of a ~15k-file linux-source-6.1 subset (tmpfs) (durable)
#   lsR       ls -lR of the extracted tree
#   readall   cat of every file of the tree
#   rm        rm -rf of the tree                                     (durable)
# "durable" = op; sync -f MNT; unmount and wait for the daemon to exit; sync -f
# STORE, all inside the timer: Linux does not forward syncfs to FUSE daemons,
# so only the unmount proves that the daemon's write-back reached the store.
# Also reported: tresor daemon peak RSS (VmHWM) during seqwrite, read from
# /proc/PID/status just before the unmount.
#
# Environment: REPS (3), SYSTEMS ("tresor gocryptfs bindfs"), TRESOR_BIN
# (target/release/tresor), BENCH_WORKDIR (/tmp: the disk under test),
# BENCH_INPUTS (/dev/shm/tresor-bench: ~1.3 GB of cached inputs in RAM; delete
# when done), LINUX_TARBALL (/usr/src/linux-source-6.1.tar.xz),
# SMALL_DIRS ("include tools fs kernel"), BINDFS_OPTS ("-o big_writes --multithreaded").
# Installs nothing; prints the apt-get line for whatever is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
read -r -a SYSTEMS <<<"${SYSTEMS:-tresor gocryptfs bindfs}"
TRESOR_BIN=${TRESOR_BIN:-$ROOT/target/release/tresor}
BENCH_INPUTS=${BENCH_INPUTS:-/dev/shm/tresor-bench}
LINUX_TARBALL=${LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
SMALL_DIRS=${SMALL_DIRS:-include tools fs kernel}
BINDFS_OPTS=${BINDFS_OPTS--o big_writes --multithreaded}
MOUNT_TIMEOUT=60
TREE=linux-source-6.1

log() { echo "[bench $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# --- requirements ---------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (drop_caches, mounts)"
missing=()
for t in fusermount3:fuse3 bindfs:bindfs gocryptfs:gocryptfs xz:xz-utils tar:tar cmp:diffutils pgrep:procps; do
    command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[[ -f $LINUX_TARBALL ]] || missing+=(linux-source-6.1)
((${#missing[@]} == 0)) || die "missing tools; install with: apt-get install -y ${missing[*]}"
if [[ " ${SYSTEMS[*]} " == *" tresor "* && ! -x $TRESOR_BIN ]]; then
    die "$TRESOR_BIN not built: cargo build --release"
fi

# --- inputs (cached in tmpfs) ----------------------------------------------------
mkdir -p "$BENCH_INPUTS"
BIG=$BENCH_INPUTS/rand-1g.bin
TAR=$BENCH_INPUTS/small.tar
if [[ ! -f $BIG || $(stat -c %s "$BIG") -ne 1073741824 ]]; then
    log "generating $BIG"
    head -c 1G /dev/urandom >"$BIG.tmp" && mv "$BIG.tmp" "$BIG"
fi
if [[ ! -f $TAR ]]; then
    log "extracting $SMALL_DIRS from $LINUX_TARBALL into $TAR"
    rm -rf "$BENCH_INPUTS/x" && mkdir -p "$BENCH_INPUTS/x"
    members=()
    for d in $SMALL_DIRS; do members+=("$TREE/$d"); done
    tar -xJf "$LINUX_TARBALL" -C "$BENCH_INPUTS/x" "${members[@]}"
    tar -cf "$TAR.tmp" -C "$BENCH_INPUTS/x" "$TREE" && mv "$TAR.tmp" "$TAR"
    rm -rf "$BENCH_INPUTS/x"
fi
NFILES=$(tar -tvf "$TAR" | grep -c '^-')
log "inputs: $BIG, $TAR ($NFILES files)"

# --- mounts -----------------------------------------------------------------------
WORK=$(mktemp -d -p "${BENCH_WORKDIR:-/tmp}" tresor-bench.XXXXXX)
PF=$WORK/passphrase
echo "bench-passphrase-Zq8r2" >"$PF"
OUT=$WORK/results.tsv
: >"$OUT"
MOUNTED=()

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
daemon_pid() { # the process naming MNT in its argv that holds /dev/fuse
    local pid fd
    for pid in $(pgrep -f -- "$1" || true); do
        for fd in /proc/"$pid"/fd/*; do
            [[ "$(readlink "$fd" 2>/dev/null)" == /dev/fuse ]] && { echo "$pid"; return; }
        done
    done
}
# do_mount SYS STORE MNT: initialises STORE on first use; returns once mounted
do_mount() {
    local sys=$1 store=$2 mnt=$3 i
    case $sys in
    tresor)
        [[ -e $store/tresor.key ]] || "$TRESOR_BIN" init --vault "$store" --passphrase-file "$PF" >/dev/null </dev/null
        "$TRESOR_BIN" mount --vault "$store" --passphrase-file "$PF" "$mnt" </dev/null >>"$WORK/mount.log" 2>&1 ;;
    gocryptfs)
        [[ -e $store/gocryptfs.conf ]] || { mkdir -p "$store"; gocryptfs -init -q -passfile "$PF" "$store" </dev/null; }
        gocryptfs -q -passfile "$PF" "$store" "$mnt" </dev/null >>"$WORK/mount.log" 2>&1 ;;
    bindfs)
        mkdir -p "$store"
        # shellcheck disable=SC2086  # BINDFS_OPTS is a word list
        bindfs $BINDFS_OPTS "$store" "$mnt" </dev/null >>"$WORK/mount.log" 2>&1 ;;
    esac || { tail -20 "$WORK/mount.log" >&2; die "$sys: mount of $store on $mnt failed"; }
    MOUNTED+=("$mnt")
    for ((i = 0; i < MOUNT_TIMEOUT * 10; i++)); do is_mounted "$mnt" && return 0; sleep 0.1; done
    tail -20 "$WORK/mount.log" >&2
    die "$sys: $mnt not mounted after ${MOUNT_TIMEOUT}s"
}
# do_umount SYS MNT: returns after the daemon has exited
do_umount() {
    local sys=$1 mnt=$2 pid i
    pid=$(daemon_pid "$mnt")
    if [[ $sys == tresor ]]; then "$TRESOR_BIN" unmount "$mnt"; else fusermount3 -u "$mnt"; fi
    for ((i = 0; i < MOUNT_TIMEOUT * 20; i++)); do
        [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null || die "$sys: daemon $pid alive ${MOUNT_TIMEOUT}s after unmount"
}
cleanup() {
    local rc=$? m
    for m in "${MOUNTED[@]}"; do
        is_mounted "$m" && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true; }
    done
    sleep 0.5
    for m in "${MOUNTED[@]}"; do is_mounted "$m" && { log "leaving $WORK: $m still mounted"; exit "$rc"; }; done
    rm -rf --one-file-system "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { echo "$EPOCHREALTIME"; }
record() { printf '%s\t%s\t%s\t%s\n' "$SYS" "$REP" "$1" "$2" >>"$OUT"; log "$SYS rep$REP $1 = $2"; }

# timed SYS-agnostic helpers; use $SYS $S (store) $M (mount)
timed_write() { # name cmd...
    local name=$1 t0
    shift
    drop_caches
    do_mount "$SYS" "$S" "$M"
    t0=$(now)
    "$@"
    sync -f "$M"
    [[ $name != seqwrite || $SYS != tresor ]] || record tresor_vmhwm_mib "$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$(daemon_pid "$M")/status")"
    do_umount "$SYS" "$M"
    sync -f "$S"
    record "$name" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')"
}
timed_read() { # name cmd...   (leaves the fs mounted)
    local name=$1 t0
    shift
    drop_caches
    do_mount "$SYS" "$S" "$M"
    t0=$(now)
    "$@"
    record "$name" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')"
}

op_seqwrite() { cp "$BIG" "$M/big"; }
op_seqread() { cat "$M/big" >/dev/null; }
op_untar() { tar -xf "$TAR" -C "$M"; }
op_lsR() { (cd "$M" && ls -lR >/dev/null); }
op_readall() { (cd "$M" && find . -type f -exec cat {} + >/dev/null); }
op_rm() { rm -rf "${M:?}/$TREE"; }

log "work dir $WORK; systems ${SYSTEMS[*]}; REPS=$REPS"
for ((REP = 1; REP <= REPS; REP++)); do
    for SYS in "${SYSTEMS[@]}"; do
        S=$WORK/$SYS-$REP-store M=$WORK/$SYS-$REP-mnt
        mkdir -p "$M"
        timed_write seqwrite op_seqwrite
        timed_read seqread op_seqread
        cmp "$BIG" "$M/big" || die "$SYS: read-back of the 1 GiB file differs"
        rm -f "$M/big"
        do_umount "$SYS" "$M"
        before=$(du -sm "$S" | cut -f1)
        timed_write untar op_untar
        record untar_store_mib "$(($(du -sm "$S" | cut -f1) - before))"
        timed_read lsR op_lsR
        do_umount "$SYS" "$M"
        timed_read readall op_readall
        n=$(find "$M/$TREE" -type f | wc -l)
        [[ $n -eq $NFILES ]] || die "$SYS: $n files in the mount, $NFILES in the tarball"
        do_umount "$SYS" "$M"
        timed_write rm op_rm
        rm -rf --one-file-system "$S" "$M"
    done
done

# --- report -----------------------------------------------------------------------
{
    echo
    echo "### tresor vs gocryptfs vs bindfs: median of $REPS (seconds; ratio = tresor / other)"
    echo
    echo "kernel $(uname -r), $(nproc) cores, store on $(df --output=source,fstype "${BENCH_WORKDIR:-/tmp}" | tail -1 | tr -s ' '), $NFILES files in the tree"
    echo
    awk -F'\t' -v systems="${SYSTEMS[*]}" '
        { v[$1 "," $3] = v[$1 "," $3] " " $4; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } }
        function median(s,   a, k, i, j, t) {
            k = split(s, a, " "); if (k == 0) return ""
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        END {
            ns = split(systems, sy, " ")
            hdr = "| workload |"; sep = "|---|"
            for (i = 1; i <= ns; i++) { hdr = hdr " " sy[i] " |"; sep = sep "---|" }
            hdr = hdr " tresor/gocryptfs | tresor/bindfs |"; sep = sep "---|---|"
            print hdr; print sep
            for (w = 1; w <= n; w++) {
                name = order[w]; if (name == "tresor_vmhwm_mib") continue
                line = "| " name " |"
                for (i = 1; i <= ns; i++) { m[sy[i]] = median(v[sy[i] "," name]); line = line " " m[sy[i]] " |" }
                for (o = 1; o <= 2; o++) {
                    other = (o == 1) ? "gocryptfs" : "bindfs"
                    r = (m["tresor"] != "" && m[other] + 0 > 0) ? sprintf("%.2f", m["tresor"] / m[other]) : "-"
                    line = line " " r " |"
                }
                print line
            }
            if (("tresor,tresor_vmhwm_mib") in v)
                printf "\ntresor daemon peak RSS (VmHWM) during the 1 GiB write: median %s MiB (all reps:%s)\n", median(v["tresor,tresor_vmhwm_mib"]), v["tresor,tresor_vmhwm_mib"]
            print "\n(untar_store_mib: growth of the store (du -sm) caused by the untar, in MiB)"
        }' "$OUT"
} | tee "$WORK/report.md"
cp "$OUT" "${TMPDIR:-/tmp}/tresor-bench-results.tsv"
log "raw results: ${TMPDIR:-/tmp}/tresor-bench-results.tsv"
