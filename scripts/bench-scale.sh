#!/usr/bin/env bash
# bench-scale.sh - what a vault costs as it grows, and big directories against
# native ext4 and gocryptfs. Prints markdown tables; raw rows go to a TSV.
#
# Usage (as root): scripts/bench-scale.sh
#                  SIZES="10000 100000" BIGDIR=0 scripts/bench-scale.sh
#
# Part 1, big directory (BIGDIR entries, 0 = skip), native ext4 (a directory
# on BENCH_WORKDIR's disk), tresor and gocryptfs, one after the other in one
# run (the ratios are what to read on a shared machine):
#   create      python3 creates BIGDIR empty files in one directory (one
#               openat+close each)
#   ls_l_cold   `ls -l DIR` after `sync; echo 3 > drop_caches` (a fresh mount
#               for tresor and gocryptfs)
#   ls_l_warm   `ls -l DIR` again
#   ls_names    `ls DIR` (warm)
#   lookup_ms   mean of 200 stat()s of distinct names, each looked up once,
#               after drop_caches and `ls DIR` (the names are listed, their
#               dentries and attributes are not cached)
#   neg_ms      mean of 1000 stat()s of 10 missing names (after the first
#               miss of each, the kernel's negative entry answers)
# Part 2, growth (tresor; gocryptfs for sizes up to GOCRYPTFS_MAX): for each N
# in SIZES, N files of 20-60 bytes of distinct content, 1,000 per directory:
#   create_s       creating them through the mount: CREATORS (4) python3
#                  processes, one openat+write+close per file
#   mount_s        `tresor mount` until it returns (ready), caches dropped
#   rss_mount_mib  daemon VmRSS right after mount
#   walk_s         `find MNT -type f | wc -l` (lookup + stat of every file)
#   rss_walk_mib   daemon VmHWM after the walk
#   index_b_file   (index.sqlite + its WAL) / N, unmounted
#   snap_index_b   index bytes the local backend directory gained after a
#                  mount, one appended line in one file, and unmount (the
#                  final snapshot: changed 16 KiB index blocks + manifest)
#   snap_pack_b    pack bytes it gained then (one pack of the smallest size
#                  class, 1 MiB)
#   snap_s         that unmount (flush, commit, snapshot upload, wait)
#   capture_s      of which the snapshot capture (from the daemon's log: all
#                  packs on the backend → capture logged)
#   index_copy_s   of which the local index copy at unmount (from the log)
#   restore_s      `tresor restore` of the vault from the backend directory
#   gc_s           `tresor gc` (unmounted; nothing to collect but the scan)
#   verify_s       `tresor verify` (local store and backend, no --data)
# Backend: a local directory (`backend add --dir`), so network costs are out
# of the figures and upload bytes are exact.
#
# Environment: SIZES ("10000 100000 1000000"), BIGDIR (100000), TRESOR_BIN
# (target/release/tresor), GOCRYPTFS_MAX (100000: the largest N gocryptfs is
# also measured at), BENCH_WORKDIR (/var/tmp: must be a real disk, not tmpfs),
# CREATORS (4), VAULTS_DIR (unset: if set, the growth vaults and their backend
# directories are kept there and reused by the next run, which then skips
# create_s and measures the rest on them).
# Raw rows: ${TMPDIR:-/tmp}/tresor-bench-scale.tsv. Installs nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a SIZES <<<"${SIZES:-10000 100000 1000000}"
BIGDIR=${BIGDIR:-100000}
TRESOR_BIN=${TRESOR_BIN:-$ROOT/target/release/tresor}
GOCRYPTFS_MAX=${GOCRYPTFS_MAX:-100000}
MOUNT_TIMEOUT=600

log() { echo "[bench-scale $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[[ $(id -u) -eq 0 ]] || die "run as root (drop_caches, mounts)"
missing=()
for t in fusermount3:fuse3 gocryptfs:gocryptfs python3:python3 pgrep:procps; do
    command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
((${#missing[@]} == 0)) || die "missing tools; install with: apt-get install -y ${missing[*]}"
[[ -x $TRESOR_BIN ]] || die "$TRESOR_BIN not built: cargo build --release"

WORK=$(mktemp -d -p "${BENCH_WORKDIR:-/var/tmp}" tresor-bench-scale.XXXXXX)
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
wait_mounted() {
    local i
    for ((i = 0; i < MOUNT_TIMEOUT * 10; i++)); do is_mounted "$1" && return 0; sleep 0.1; done
    die "$1 not mounted after ${MOUNT_TIMEOUT}s"
}
do_mount() { # SYS STORE MNT
    local sys=$1 store=$2 mnt=$3
    mkdir -p "$mnt"
    case $sys in
    tresor)
        [[ -e $store/tresor.key ]] || "$TRESOR_BIN" init --vault "$store" --passphrase-file "$PF" >/dev/null </dev/null
        "$TRESOR_BIN" mount --vault "$store" --passphrase-file "$PF" "$mnt" </dev/null >>"$WORK/mount.log" 2>&1 ;;
    gocryptfs)
        [[ -e $store/gocryptfs.conf ]] || { mkdir -p "$store"; gocryptfs -init -q -passfile "$PF" "$store" </dev/null >/dev/null 2>&1; }
        gocryptfs -q -passfile "$PF" "$store" "$mnt" </dev/null >>"$WORK/mount.log" 2>&1 ;;
    esac || { tail -20 "$WORK/mount.log" >&2; die "$sys: mount of $store on $mnt failed"; }
    MOUNTED+=("$mnt")
    wait_mounted "$mnt"
}
do_umount() { # SYS MNT: returns after the daemon has exited
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
    cp "$OUT" "${TMPDIR:-/tmp}/tresor-bench-scale.tsv" 2>/dev/null || true
    rm -rf --one-file-system "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$OUT"; log "$1 $2 $3 = $4"; }
timed() { # prints the seconds "$@" took
    local t0
    t0=$(now)
    "$@" >/dev/null
    since "$t0"
}
rss_mib() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# python3 helpers (no per-file process)
create_flat() { python3 -c '
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
for i in range(n):
    os.close(os.open(os.path.join(d, "f%07d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
' "$1" "$2"; }
create_tree() { # ROOT N: CREATORS processes, each its own directories; one
    # openat(O_CREAT) + write + close per file (no stdio buffering, no isatty
    # ioctl), all through the mount
    python3 -c '
import os, sys
root, n, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dirs = (n + 999) // 1000
kids = []
for p in range(procs):
    pid = os.fork()
    if pid == 0:
        for k in range(p, dirs, procs):
            d = os.path.join(root, "d%04d" % k)
            os.makedirs(d, exist_ok=True)
            for i in range(k * 1000, min(n, (k + 1) * 1000)):
                fd = os.open(os.path.join(d, "f%07d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, (("file %d of the scale benchmark\n" % i) + "x" * (i % 31)).encode())
                os.close(fd)
        os._exit(0)
    kids.append(pid)
bad = [pid for pid in kids if os.waitpid(pid, 0)[1] != 0]
sys.exit(1 if bad else 0)
' "$1" "$2" "${CREATORS:-4}"; }
log_phases() { # LOG: seconds of the last unmount's capture and index copy
    python3 -c '
import datetime, re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
start = max(i for i, l in enumerate(lines) if "unmounted; everything flushed" in l)
def t(pat):
    for l in lines[start:]:
        if re.search(pat, l):
            return datetime.datetime.fromisoformat(l[1:24].rstrip("Z")).timestamp()
    return None
packs, cap = t("every pack is on every backend"), t(r"\] index snapshot generation \d+:")
every, copy = t(r"index snapshot generation \d+ is on every backend"), t("index copied to")
f = lambda a, b: "%.3f" % (b - a) if a is not None and b is not None else "-"
print(f(packs, cap), f(every, copy))
' "$1"; }
mean_stat_ms() { # DIR N COUNT PREFIX: mean ms of stat() of COUNT distinct names
    python3 -c '
import os, sys, time
d, n, count, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
step = max(1, n // count)
names = [os.path.join(d, "%s%07d" % (prefix, i)) for i in range(0, n, step)][:count]
t = time.perf_counter()
for p in names:
    os.stat(p)
print("%.4f" % ((time.perf_counter() - t) * 1000 / len(names)))
' "$@"; }
neg_ms() { python3 -c '
import os, sys, time
d = sys.argv[1]
t = time.perf_counter()
for i in range(1000):
    try:
        os.stat(os.path.join(d, "missing%d" % (i % 10)))
    except FileNotFoundError:
        pass
print("%.4f" % ((time.perf_counter() - t) * 1000 / 1000))
' "$1"; }

log "work dir $WORK; sizes ${SIZES[*]}; big directory $BIGDIR; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- part 1: one big directory ---------------------------------------------------
if ((BIGDIR > 0)); then
    for SYS in native tresor gocryptfs; do
        S=$WORK/big-$SYS-store M=$WORK/big-$SYS-mnt
        if [[ $SYS == native ]]; then M=$S; mkdir -p "$M"; else do_mount "$SYS" "$S" "$M"; fi
        record big "$SYS" create "$(timed create_flat "$M/big" "$BIGDIR")"
        [[ $SYS == native ]] || { do_umount "$SYS" "$M"; }
        drop_caches
        [[ $SYS == native ]] || do_mount "$SYS" "$S" "$M"
        record big "$SYS" ls_l_cold "$(timed ls -l "$M/big")"
        record big "$SYS" ls_l_warm "$(timed ls -l "$M/big")"
        record big "$SYS" ls_names "$(timed ls "$M/big")"
        [[ $SYS == native ]] || do_umount "$SYS" "$M"
        drop_caches
        [[ $SYS == native ]] || do_mount "$SYS" "$S" "$M"
        ls "$M/big" >/dev/null
        record big "$SYS" lookup_ms "$(mean_stat_ms "$M/big" "$BIGDIR" 200 f)"
        record big "$SYS" neg_ms "$(neg_ms "$M/big")"
        [[ $SYS == native ]] || do_umount "$SYS" "$M"
        rm -rf --one-file-system "$S"
    done
fi

# --- part 2: growth ----------------------------------------------------------------
for N in "${SIZES[@]}"; do
    systems=(tresor)
    ((N > GOCRYPTFS_MAX)) || systems+=(gocryptfs)
    for SYS in "${systems[@]}"; do
        BASE=${VAULTS_DIR:-$WORK}
        S=$BASE/$N-$SYS-store R=$BASE/$N-$SYS-remote M=$WORK/$N-$SYS-mnt
        if [[ ! -e $S/.bench-created ]]; then
            rm -rf --one-file-system "$S" "$R"
            if [[ $SYS == tresor ]]; then
                "$TRESOR_BIN" init --vault "$S" --passphrase-file "$PF" >/dev/null </dev/null
                mkdir -p "$R"
                "$TRESOR_BIN" backend add --vault "$S" --passphrase-file "$PF" --dir "$R" --location DE --operator bench --operator-country DE bench >/dev/null </dev/null
            fi
            do_mount "$SYS" "$S" "$M"
            record "$N" "$SYS" create_s "$(timed create_tree "$M" "$N")"
            do_umount "$SYS" "$M"
            touch "$S/.bench-created"
        else
            log "$N $SYS: reusing $S (created by an earlier run)"
        fi
        drop_caches
        t0=$(now)
        do_mount "$SYS" "$S" "$M"
        record "$N" "$SYS" mount_s "$(since "$t0")"
        pid=$(daemon_pid "$M")
        record "$N" "$SYS" rss_mount_mib "$(rss_mib "$pid" VmRSS)"
        record "$N" "$SYS" walk_s "$(timed sh -c "find '$M' -type f | wc -l")"
        record "$N" "$SYS" rss_walk_mib "$(rss_mib "$pid" VmHWM)"
        do_umount "$SYS" "$M"
        if [[ $SYS == tresor ]]; then
            idx=$(stat -c %s "$S/index.sqlite" "$S/index.sqlite-wal" 2>/dev/null | awk '{ s += $1 } END { print s }')
            record "$N" tresor index_b_file "$(awk -v a="$idx" -v n="$N" 'BEGIN { printf "%.0f", a / n }')"
            # one change, then the unmount's snapshot: what reached the backend
            do_mount tresor "$S" "$M"
            touch "$WORK/marker"
            sleep 1
            echo "one more line" >>"$M/d0000/f0000000"
            t0=$(now)
            do_umount tresor "$M"
            record "$N" tresor snap_s "$(since "$t0")"
            # the daemon's log of that unmount: packs on the backend → capture
            # logged (the snapshot round's reads and hashes) → on every backend
            # → local index copy written
            read -r cap_s copy_s < <(log_phases "$S/tresor.log")
            record "$N" tresor capture_s "$cap_s"
            record "$N" tresor index_copy_s "$copy_s"
            record "$N" tresor snap_index_b "$(find "$R" -path '*/index/*' -type f -newer "$WORK/marker" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
            record "$N" tresor snap_pack_b "$(find "$R" -path '*/packs/*' -type f -newer "$WORK/marker" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
            "$TRESOR_BIN" backend export --vault "$S" --passphrase-file "$PF" -o "$WORK/$N-restore.toml" </dev/null
            record "$N" tresor restore_s "$(timed "$TRESOR_BIN" restore -q --vault "$WORK/$N-restored" --passphrase-file "$PF" --backend-config "$WORK/$N-restore.toml")"
            rm -rf --one-file-system "$WORK/$N-restored" "$WORK/$N-restore.toml"
            record "$N" tresor gc_s "$(timed "$TRESOR_BIN" gc -q --vault "$S" --passphrase-file "$PF")"
            record "$N" tresor verify_s "$(timed "$TRESOR_BIN" verify -q --vault "$S" --passphrase-file "$PF")"
        fi
        rm -rf --one-file-system "$M"
        [[ -n ${VAULTS_DIR:-} ]] || rm -rf --one-file-system "$S" "$R"
    done
done

# --- report -------------------------------------------------------------------------
{
    echo
    echo "kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), work dir on $(df --output=source,fstype "$WORK" | tail -1 | tr -s ' ')"
    if ((BIGDIR > 0)); then
        echo
        echo "### One directory of $BIGDIR files (seconds; ms for lookups)"
        echo
        awk -F'\t' '$1 == "big" { v[$2 "," $3] = $4; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } }
            END {
                print "| operation | native ext4 | tresor | gocryptfs | tresor/native | tresor/gocryptfs |"
                print "|---|---|---|---|---|---|"
                for (i = 1; i <= n; i++) {
                    o = order[i]; a = v["native," o]; t = v["tresor," o]; g = v["gocryptfs," o]
                    printf "| %s | %s | %s | %s | %s | %s |\n", o, a, t, g,
                        (a + 0 > 0) ? sprintf("%.1f", t / a) : "-", (g + 0 > 0) ? sprintf("%.2f", t / g) : "-"
                }
            }' "$OUT"
    fi
    echo
    echo "### Growth (tresor; gocryptfs where it applies)"
    echo
    awk -F'\t' -v sizes="${SIZES[*]}" '$1 != "big" { v[$1 "," $2 "," $3] = $4; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } }
        END {
            ns = split(sizes, s, " ")
            hdr = "| metric |"; sep = "|---|"
            for (i = 1; i <= ns; i++) { hdr = hdr " " s[i] " |"; sep = sep "---|" }
            print hdr; print sep
            for (k = 1; k <= n; k++) for (y = 1; y <= 2; y++) {
                sys = (y == 1) ? "tresor" : "gocryptfs"; line = "| " order[k] " (" sys ") |"; any = 0
                for (i = 1; i <= ns; i++) { x = v[s[i] "," sys "," order[k]]; if (x != "") any = 1; line = line " " (x == "" ? "-" : x) " |" }
                if (any) print line
            }
        }' "$OUT"
} | tee "$WORK/report.md"
log "raw results: ${TMPDIR:-/tmp}/tresor-bench-scale.tsv"
