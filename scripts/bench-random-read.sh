#!/usr/bin/env bash
# bench-random-read.sh - random 4 KiB reads of a 1 GiB random file: tresor vs
# gocryptfs vs bindfs, interleaved, cold caches. What a thumbnailer or a media
# player seeking in a big file does.
#
# Usage (as root): scripts/bench-random-read.sh      REPS=1 RUNTIME=10 scripts/bench-random-read.sh
#
# Per repetition and system (systems interleaved within a repetition):
#   1. fresh store, mount, cp the 1 GiB input (tmpfs) into it, unmount
#      (the daemon has flushed and exited: the file is in the store)
#   2. for each workload: sync; drop_caches; mount; drop_caches; fio; unmount
#        randread     fio --rw=randread --bs=4k, psync, fadvise RANDOM (fio's
#                     default for random I/O: no kernel readahead, every
#                     4 KiB read reaches the filesystem)
#        randread-ra  the same with --fadvise_hint=0 (kernel readahead on, as
#                     a plain program reading pieces of a file gets it)
#      Both run RUNTIME seconds on one thread with fio's fixed random seed, so
#      every system reads the same offsets in the same order.
# Prints, per workload: median over repetitions of IOPS and of fio's median
# completion latency, and ratios tresor/gocryptfs (IOPS: >1 = tresor faster;
# latency: <1 = tresor faster).
#
# Environment: REPS (3), RUNTIME (20 s per fio run), SYSTEMS ("tresor
# gocryptfs bindfs"), TRESOR_BIN (target/release/tresor), BENCH_WORKDIR (/tmp:
# the disk under test), BENCH_INPUTS (/dev/shm/tresor-bench: 1 GiB input in
# RAM, shared with scripts/bench.sh; delete when done),
# BINDFS_OPTS ("-o big_writes --multithreaded"), TRESOR_BASE_BIN (the binary
# of the system "tresor-base", e.g. a build of main, for an A/B in one
# interleaved run: SYSTEMS="tresor-base tresor gocryptfs").
# Installs nothing; prints the apt-get line for whatever is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-20}
read -r -a SYSTEMS <<<"${SYSTEMS:-tresor gocryptfs bindfs}"
TRESOR_BIN=${TRESOR_BIN:-$ROOT/target/release/tresor}
BENCH_INPUTS=${BENCH_INPUTS:-/dev/shm/tresor-bench}
BINDFS_OPTS=${BINDFS_OPTS--o big_writes --multithreaded}
MOUNT_TIMEOUT=60
WORKLOADS=(randread randread-ra)

log() { echo "[bench-rr $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# --- requirements ---------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (drop_caches, mounts)"
missing=()
for t in fusermount3:fuse3 bindfs:bindfs gocryptfs:gocryptfs fio:fio python3:python3 pgrep:procps; do
    command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
((${#missing[@]} == 0)) || die "missing tools; install with: apt-get install -y ${missing[*]}"
if [[ " ${SYSTEMS[*]} " == *" tresor "* && ! -x $TRESOR_BIN ]]; then
    die "$TRESOR_BIN not built: cargo build --release"
fi

# --- input (cached in tmpfs) -----------------------------------------------------
mkdir -p "$BENCH_INPUTS"
BIG=$BENCH_INPUTS/rand-1g.bin
if [[ ! -f $BIG || $(stat -c %s "$BIG") -ne 1073741824 ]]; then
    log "generating $BIG"
    head -c 1G /dev/urandom >"$BIG.tmp" && mv "$BIG.tmp" "$BIG"
fi

# --- mounts (as in scripts/bench.sh) ---------------------------------------------
WORK=$(mktemp -d -p "${BENCH_WORKDIR:-/tmp}" tresor-bench-rr.XXXXXX)
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
    tresor | tresor-base)
        local bin=$TRESOR_BIN
        [[ $sys == tresor-base ]] && bin=${TRESOR_BASE_BIN:?TRESOR_BASE_BIN unset}
        [[ -e $store/tresor.key ]] || "$bin" init --vault "$store" --passphrase-file "$PF" >/dev/null </dev/null
        "$bin" mount --vault "$store" --passphrase-file "$PF" "$mnt" </dev/null >>"$WORK/mount.log" 2>&1 ;;
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
    if [[ $sys == tresor* ]]; then "$TRESOR_BIN" unmount "$mnt"; else fusermount3 -u "$mnt"; fi
    for ((i = 0; i < MOUNT_TIMEOUT * 20; i++)); do
        # shellcheck disable=SC2015  # break unless the daemon is still alive
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

# run_fio WORKLOAD FILE: appends "iops median_latency_us" for this run to $OUT
run_fio() {
    local wl=$1 file=$2 hint=1 json
    [[ $wl == randread-ra ]] && hint=0
    json=$WORK/fio-$SYS-$REP-$wl.json
    fio --name="$wl" --filename="$file" --rw=randread --bs=4k --size=1G \
        --ioengine=psync --numjobs=1 --iodepth=1 --direct=0 --fadvise_hint="$hint" \
        --allow_file_create=0 --randrepeat=1 --runtime="$RUNTIME" --time_based \
        --output-format=json --output="$json" >/dev/null
    python3 - "$json" "$SYS" "$REP" "$wl" >>"$OUT" <<'PY'
import json, sys
path, system, rep, wl = sys.argv[1:]
job = json.load(open(path))["jobs"][0]["read"]
if job.get("io_bytes", 0) == 0:
    sys.exit(f"{system}: fio read nothing ({path})")
pct = job["clat_ns"]["percentile"]
print(f"{system}\t{rep}\t{wl}\t{job['iops']:.1f}\t{pct['50.000000'] / 1000:.1f}\t{pct['99.000000'] / 1000:.1f}")
PY
    log "$SYS rep$REP $wl: $(tail -1 "$OUT" | cut -f4-6 | awk -F'\t' '{ printf "%s IOPS, median %s us, p99 %s us", $1, $2, $3 }')"
}

log "work dir $WORK; systems ${SYSTEMS[*]}; REPS=$REPS; RUNTIME=${RUNTIME}s per fio run"
for ((REP = 1; REP <= REPS; REP++)); do
    for SYS in "${SYSTEMS[@]}"; do
        S=$WORK/$SYS-$REP-store M=$WORK/$SYS-$REP-mnt
        mkdir -p "$M"
        do_mount "$SYS" "$S" "$M"
        cp "$BIG" "$M/big"
        do_umount "$SYS" "$M"
        for wl in "${WORKLOADS[@]}"; do
            drop_caches
            do_mount "$SYS" "$S" "$M"
            drop_caches
            [[ $(stat -c %s "$M/big") -eq 1073741824 ]] || die "$SYS: the file in the mount is not 1 GiB"
            run_fio "$wl" "$M/big"
            do_umount "$SYS" "$M"
        done
        rm -rf --one-file-system "$S" "$M"
    done
done

# --- report -----------------------------------------------------------------------
{
    echo
    echo "### random 4 KiB reads of a 1 GiB file, cold cache: median of $REPS x ${RUNTIME} s"
    echo
    echo "kernel $(uname -r), $(nproc) cores, store on $(df --output=source,fstype "${BENCH_WORKDIR:-/tmp}" | tail -1 | tr -s ' ')"
    echo
    awk -F'\t' -v systems="${SYSTEMS[*]}" '
        { iops[$1 "," $3] = iops[$1 "," $3] " " $4; lat[$1 "," $3] = lat[$1 "," $3] " " $5; p99[$1 "," $3] = p99[$1 "," $3] " " $6
          if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } }
        function median(s,   a, k, i, j, t) {
            k = split(s, a, " "); if (k == 0) return ""
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        function ratio(a, b) { return (a != "" && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
        END {
            ns = split(systems, sy, " ")
            print "| workload | system | IOPS | median latency (us) | p99 latency (us) |"
            print "|---|---|---|---|---|"
            for (w = 1; w <= n; w++) for (i = 1; i <= ns; i++) {
                k = sy[i] "," order[w]
                if (k in iops) printf "| %s | %s | %s | %s | %s |\n", order[w], sy[i], median(iops[k]), median(lat[k]), median(p99[k])
            }
            print ""
            print "| workload | IOPS tresor/gocryptfs | IOPS tresor/bindfs | median latency tresor/gocryptfs | IOPS tresor-base/gocryptfs |"
            print "|---|---|---|---|---|"
            for (w = 1; w <= n; w++) {
                t = "tresor," order[w]; g = "gocryptfs," order[w]; b = "bindfs," order[w]; a = "tresor-base," order[w]
                printf "| %s | %s | %s | %s | %s |\n", order[w], ratio(median(iops[t]), median(iops[g])), ratio(median(iops[t]), median(iops[b])), ratio(median(lat[t]), median(lat[g])), ratio(median(iops[a]), median(iops[g]))
            }
        }' "$OUT"
} | tee "$WORK/report.md"
cp "$OUT" "${TMPDIR:-/tmp}/tresor-bench-random-read.tsv"
log "raw results: ${TMPDIR:-/tmp}/tresor-bench-random-read.tsv (system rep workload iops median_us p99_us)"
