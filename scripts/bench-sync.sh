#!/usr/bin/env bash
# bench-sync.sh - upload to a loopback S3 server: tresor vs `rclone copy` to an
# rclone crypt remote, interleaved, medians and ratios as markdown.
#
# Usage (as root): scripts/bench-sync.sh        REPS=1 scripts/bench-sync.sh
#
# Workloads (inputs in tmpfs, generated once per run or cached in BENCH_INPUTS):
#   large  one file of 1 GiB of random data
#   small  5,000 files of random data, 1-16 KiB each, in 50 directories
# Every run gets a fresh moto_server (S3 API, in memory) on 127.0.0.1, a fresh
# bucket and, for tresor, a fresh vault, after `sync; echo 3 > drop_caches`:
#   tresor  init, `backend add --s3`, mount, `tresor sync` (uploads the key
#           file, untimed); then timed: `cp -a SRC/. MNT/` ("copy") followed by
#           `tresor sync` (returns once every pack is in the bucket): seconds =
#           start of the copy until `tresor sync` returns. Then unmount.
#   rclone  timed: `rclone copy SRC crypt:` (Debian's rclone, default flags
#           plus RCLONE_FLAGS) to a crypt remote over an s3 remote
#           (provider Other, force_path_style, no_head) on the same kind of
#           server. no_head = true (RCLONE_NO_HEAD): after a multipart upload
#           rclone 1.60 HEADs the object with ?versionId=null, which moto
#           answers with 400: the copy "fails" and rclone retries it (the
#           retry finds the object and skips it). Without the HEAD rclone also
#           saves one request per file: a stronger baseline for the small-file
#           tree (RCLONE_NO_HEAD=false: rclone's default, ~2x slower there).
# Measured per run: seconds, MB/s (input bytes / 1e6 / seconds), objects in
# the bucket and the sum of their sizes (listed with rclone on the plain s3
# remote, after the run), and the HTTP requests moto logged from the start of
# the timed part until the system was done (tresor: until unmount returned;
# rclone: until `rclone copy` returned), as PUT+POST (uploads) and all.
# Targets (issue): large: tresor MB/s >= rclone; small: tresor >= 5x faster
# and >= 100x fewer objects.
#
# Environment: REPS (3), WORKLOADS ("large small"), TRESOR_BIN
# (target/release/tresor), TRESOR_MOTO_SERVER (moto_server), BENCH_WORKDIR
# (/tmp: vaults and mounts, the disk tresor's local store is on),
# BENCH_INPUTS (unset: inputs are generated in a temp dir in /dev/shm and
# removed on exit; set: cached there and kept, ~1.1 GB of RAM if in tmpfs),
# SMALL_FILES (5000), SMALL_DIRS (50: 5 x 10), TRESOR_BACKEND_ARGS (extra
# `tresor backend add` arguments, e.g. "--concurrency 8"), RCLONE_FLAGS
# (extra `rclone copy` flags, e.g. "--transfers 8"), COPY_TIMEOUT (900 s),
# SYNC_TIMEOUT (900 s). Installs rclone (apt) and moto[server] (pip) if
# missing. Raw results: ${TMPDIR:-/tmp}/tresor-bench-sync-results.tsv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
read -r -a WORKLOADS <<<"${WORKLOADS:-large small}"
TRESOR_BIN=${TRESOR_BIN:-$ROOT/target/release/tresor}
MOTO=${TRESOR_MOTO_SERVER:-moto_server}
SMALL_FILES=${SMALL_FILES:-5000}
SMALL_DIRS=${SMALL_DIRS:-50}
read -r -a TRESOR_BACKEND_ARGS <<<"${TRESOR_BACKEND_ARGS:-}"
read -r -a RCLONE_FLAGS <<<"${RCLONE_FLAGS:-}"
RCLONE_NO_HEAD=${RCLONE_NO_HEAD:-true}
COPY_TIMEOUT=${COPY_TIMEOUT:-900}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-900}
MOUNT_TIMEOUT=60
MOTO_START_TIMEOUT=60
CMD_TIMEOUT=120 # init, backend add, status, listings, ...
REGION=us-east-1
AK=bench-access-key
SK=bench-secret-key
AUTH="AWS4-HMAC-SHA256 Credential=$AK/20250101/$REGION/s3/aws4_request, SignedHeaders=host, Signature=$(printf '0%.0s' {1..64})"

log() { echo "[bench-sync $(date +%T)] $*" >&2; }
die() {
    log "ERROR: $*"
    exit 2
}

# --- requirements ---------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (drop_caches, mounts)"
export DEBIAN_FRONTEND=noninteractive
quietly() { # run quietly, show the output only when it fails
    local out
    out=$(mktemp)
    if ! "$@" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        return 1
    fi
    rm -f "$out"
}
if ! command -v rclone >/dev/null; then
    log "installing rclone (apt)"
    quietly apt-get install -y -qq --no-install-recommends rclone ||
        { quietly apt-get update -qq && quietly apt-get install -y -qq --no-install-recommends rclone; } ||
        die "apt-get install rclone failed"
fi
if ! command -v "$MOTO" >/dev/null ||
    ! python3 -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("moto", "flask", "flask_cors")))' 2>/dev/null; then
    log "installing moto[server] (pip)"
    pip_args=(--quiet --disable-pip-version-check --no-input --root-user-action=ignore)
    if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_args+=(--break-system-packages)
    fi
    quietly python3 -m pip install "${pip_args[@]}" 'moto[server]' || die "pip install 'moto[server]' failed"
    if command -v pyenv >/dev/null; then pyenv rehash >/dev/null 2>&1 || true; fi
    command -v "$MOTO" >/dev/null || die "$MOTO not on PATH after pip install (pyenv: add its shims to PATH)"
fi
for t in fusermount3 curl python3 timeout setsid; do command -v "$t" >/dev/null || die "missing $t"; done
[[ -x $TRESOR_BIN ]] || die "$TRESOR_BIN not built: cargo build --release (or set TRESOR_BIN)"

# --- work dir, cleanup ------------------------------------------------------------
WORK=$(mktemp -d -p "${BENCH_WORKDIR:-/tmp}" tresor-bench-sync.XXXXXX)
OUT=$WORK/results.tsv
: >"$OUT"
PF=$WORK/passphrase
echo "bench-sync-passphrase-7Kp2" >"$PF"
INPUTS_TMP=""
MOUNTED=() # tresor mountpoints that may still be mounted
MOTO_PID=""

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
stop_moto() {
    local i
    [[ -n $MOTO_PID ]] || return 0
    kill -TERM -- "-$MOTO_PID" 2>/dev/null || kill -TERM "$MOTO_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$MOTO_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL -- "-$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=""
}
cleanup() {
    local rc=$? m
    trap - EXIT INT TERM
    for m in "${MOUNTED[@]}"; do
        if is_mounted "$m"; then
            timeout 60 "$TRESOR_BIN" unmount "$m" >/dev/null 2>&1 ||
                fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
        fi
    done
    stop_moto
    for m in "${MOUNTED[@]}"; do
        if is_mounted "$m"; then
            log "leaving $WORK: $m still mounted"
            exit "$rc"
        fi
    done
    rm -rf --one-file-system "$WORK"
    [[ -z $INPUTS_TMP ]] || rm -rf --one-file-system "$INPUTS_TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- inputs -------------------------------------------------------------------------
if [[ -n ${BENCH_INPUTS:-} ]]; then
    INPUTS=$BENCH_INPUTS
    mkdir -p "$INPUTS"
else
    INPUTS_TMP=$(mktemp -d -p /dev/shm tresor-bench-sync-inputs.XXXXXX)
    INPUTS=$INPUTS_TMP
fi
LARGE=$INPUTS/large
SMALL=$INPUTS/small-$SMALL_FILES-$SMALL_DIRS
wants() { [[ " ${WORKLOADS[*]} " == *" $1 "* ]]; }
if wants large && [[ ! -f $LARGE/rand-1g.bin || $(stat -c %s "$LARGE/rand-1g.bin") -ne 1073741824 ]]; then
    log "generating $LARGE/rand-1g.bin"
    rm -rf "$LARGE" "$LARGE.tmp" && mkdir -p "$LARGE.tmp"
    head -c 1G /dev/urandom >"$LARGE.tmp/rand-1g.bin"
    mv "$LARGE.tmp" "$LARGE"
fi
if wants small && [[ ! -d $SMALL ]]; then
    log "generating $SMALL ($SMALL_FILES files, 1-16 KiB, $SMALL_DIRS directories)"
    rm -rf "$SMALL.tmp"
    python3 - "$SMALL.tmp" "$SMALL_FILES" "$SMALL_DIRS" <<'PY'
import os, random, sys
root, n, ndirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(20261123)  # sizes are reproducible, contents random
dirs = [os.path.join(root, "d%d" % (i // 10), "s%d" % (i % 10)) for i in range(ndirs)]
for d in dirs:
    os.makedirs(d)
for i in range(n):
    with open(os.path.join(dirs[i % ndirs], "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(rnd.randint(1024, 16384)))
PY
    mv "$SMALL.tmp" "$SMALL"
fi
declare -A SRC NFILES INBYTES
SRC[large]=$LARGE
SRC[small]=$SMALL
for w in "${WORKLOADS[@]}"; do
    [[ -n ${SRC[$w]:-} ]] || die "unknown workload $w (large, small)"
    NFILES[$w]=$(find "${SRC[$w]}" -type f | wc -l)
    INBYTES[$w]=$(find "${SRC[$w]}" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
done
INPUTS_DESC=""
for w in "${WORKLOADS[@]}"; do INPUTS_DESC+="$w = ${NFILES[$w]} file(s), ${INBYTES[$w]} B; "; done
INPUTS_DESC=${INPUTS_DESC%; }
log "inputs: $INPUTS_DESC"

# --- helpers ------------------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_code() { # METHOD URL -> HTTP status (000 if no answer), bounded
    curl -s -o /dev/null -m 10 -X "$1" -H "Authorization: $AUTH" -w '%{http_code}' "$2" || true
}

# start_moto RUNDIR BUCKET: fresh moto_server + bucket; sets MOTO_PID MOTO_PORT MOTO_LOG
start_moto() {
    local run=$1 bucket=$2 attempt i code
    MOTO_LOG=$run/moto.log
    for attempt in 1 2 3; do
        MOTO_PORT=$(free_port)
        PYTHONUNBUFFERED=1 MOTO_S3_DEFAULT_MAX_KEYS=1000 \
            setsid "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$MOTO_LOG" 2>&1 &
        MOTO_PID=$!
        for ((i = 0; i < MOTO_START_TIMEOUT * 10; i++)); do
            kill -0 "$MOTO_PID" 2>/dev/null || break
            code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$MOTO_PORT/" || true)
            [[ $code != 200 ]] || break
            sleep 0.1
        done
        if [[ ${code:-} == 200 ]]; then
            code=$(http_code PUT "http://127.0.0.1:$MOTO_PORT/$bucket")
            [[ $code == 200 ]] || { tail -5 "$MOTO_LOG" >&2; die "moto: create bucket $bucket: HTTP $code"; }
            return 0
        fi
        tail -5 "$MOTO_LOG" >&2
        stop_moto
        grep -qiE 'address already in use|errno 98' "$MOTO_LOG" || die "moto_server did not answer within ${MOTO_START_TIMEOUT}s (attempt $attempt)"
    done
    die "moto_server: no free port after 3 attempts"
}
log_lines() { wc -l <"$MOTO_LOG"; }
# requests FROM_LINE: "uploads all" = PUT+POST and all HTTP requests moto logged after line FROM_LINE
requests() {
    tail -n "+$(($1 + 1))" "$MOTO_LOG" |
        awk '/"[A-Z]+ \/[^"]* HTTP\/1\.[01]"/ { n++; if ($0 ~ /"(PUT|POST) /) u++ } END { printf "%d %d", u, n }'
}
# rclone without the host's AWS_* variables: rclone 1.60 fails on any
# AWS_CA_BUNDLE ("LoadCustomCABundleError"), and the endpoint is plain http.
RCLONE=(env -u AWS_CA_BUNDLE -u AWS_PROFILE -u AWS_CONFIG_FILE -u AWS_SHARED_CREDENTIALS_FILE rclone)
# write_rclone_conf FILE BUCKET: remotes s3p (plain) and crypt (over s3p:BUCKET/rclone-crypt)
write_rclone_conf() {
    local f=$1 bucket=$2
    {
        echo "[s3p]"
        echo "type = s3"
        echo "provider = Other"
        echo "endpoint = http://127.0.0.1:$MOTO_PORT"
        echo "region = $REGION"
        echo "access_key_id = $AK"
        echo "secret_access_key = $SK"
        echo "force_path_style = true"
        echo "no_head = $RCLONE_NO_HEAD"
        echo
        echo "[crypt]"
        echo "type = crypt"
        echo "remote = s3p:$bucket/rclone-crypt"
        echo "password = $(rclone obscure bench-sync-passphrase-7Kp2)"
        echo "password2 = $(rclone obscure bench-sync-salt-Q3v9)"
    } >"$f"
}
# bucket_usage CONF BUCKET: "objects bytes" of every object in the bucket
bucket_usage() {
    timeout "$CMD_TIMEOUT" "${RCLONE[@]}" --config "$1" size --json "s3p:$2" |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["count"], d["bytes"])'
}
record() { # workload seconds copy_seconds objects bytes uploads requests
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SYS" "$REP" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "${INBYTES[$1]}" >>"$OUT"
    log "$SYS rep$REP $1: ${2}s (copy ${3}s), $4 objects, $5 B, $6 PUT+POST of $7 requests"
}

run_tresor() { # WORKLOAD RUNDIR
    local w=$1 run=$2 bucket=bench-tresor v m l0 t0 t1 t2 reqs usage conf
    v=$run/vault m=$run/mnt conf=$run/rclone.conf
    mkdir -p "$m"
    start_moto "$run" "$bucket"
    echo "$SK" >"$run/sk"
    timeout "$CMD_TIMEOUT" "$TRESOR_BIN" init --vault "$v" --passphrase-file "$PF" </dev/null >/dev/null
    timeout "$CMD_TIMEOUT" "$TRESOR_BIN" backend add s3b --vault "$v" --passphrase-file "$PF" --s3 \
        --endpoint "http://127.0.0.1:$MOTO_PORT" --region "$REGION" --bucket "$bucket" \
        --access-key-id "$AK" --secret-access-key-file "$run/sk" \
        --location DE --operator Bench --operator-country DE "${TRESOR_BACKEND_ARGS[@]}" </dev/null >/dev/null
    MOUNTED+=("$m")
    timeout "$MOUNT_TIMEOUT" "$TRESOR_BIN" mount --vault "$v" --passphrase-file "$PF" "$m" </dev/null >>"$run/mount.log" 2>&1 ||
        { tail -20 "$run/mount.log" "$v/tresor.log" >&2; die "tresor: mount failed"; }
    is_mounted "$m" || die "tresor: mount returned but $m is not mounted"
    # untimed: the key file goes up first
    timeout "$CMD_TIMEOUT" "$TRESOR_BIN" sync --vault "$v" --passphrase-file "$PF" --timeout "$((CMD_TIMEOUT - 10))" --quiet </dev/null ||
        die "tresor: initial sync failed"
    drop_caches
    l0=$(log_lines)
    t0=$(now)
    timeout "$COPY_TIMEOUT" cp -a "${SRC[$w]}/." "$m/" || die "tresor: copy into the mount failed or timed out"
    t1=$(now)
    timeout "$((SYNC_TIMEOUT + 30))" "$TRESOR_BIN" sync --vault "$v" --passphrase-file "$PF" --timeout "$SYNC_TIMEOUT" --quiet </dev/null ||
        { tail -20 "$v/tresor.log" >&2; die "tresor: sync failed or timed out after ${SYNC_TIMEOUT}s"; }
    t2=$(now)
    timeout "$CMD_TIMEOUT" "$TRESOR_BIN" status --vault "$v" --passphrase-file "$PF" --json </dev/null >"$run/status.json" ||
        die "tresor: status failed"
    timeout "$((MOUNT_TIMEOUT * 5))" "$TRESOR_BIN" unmount "$m" </dev/null >/dev/null || die "tresor: unmount failed or timed out"
    reqs=$(requests "$l0")
    write_rclone_conf "$conf" "$bucket"
    usage=$(bucket_usage "$conf" "$bucket")
    log "tresor status: $(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); b = d["sync"]["backends"][0]; print("packs", d["packs"], "objects", b["objects"], "bytes_stored", b["bytes_stored"], "pending", b["packs_pending"])' "$run/status.json")"
    # shellcheck disable=SC2086  # "objects bytes" and "uploads all" are word lists
    record "$w" "$(elapsed "$t0" "$t2")" "$(elapsed "$t0" "$t1")" $usage $reqs
    stop_moto
}

run_rclone() { # WORKLOAD RUNDIR
    local w=$1 run=$2 bucket=bench-rclone l0 t0 t1 reqs usage conf n
    conf=$run/rclone.conf
    start_moto "$run" "$bucket"
    write_rclone_conf "$conf" "$bucket"
    drop_caches
    l0=$(log_lines)
    t0=$(now)
    timeout "$COPY_TIMEOUT" "${RCLONE[@]}" --config "$conf" copy -q "${RCLONE_FLAGS[@]}" "${SRC[$w]}" crypt: </dev/null 2>"$run/rclone.err" ||
        { cat "$run/rclone.err" >&2; die "rclone copy failed or timed out"; }
    t1=$(now)
    if grep -q ERROR "$run/rclone.err"; then
        log "WARNING: rclone reported errors (retried; the time includes the retries):"
        cat "$run/rclone.err" >&2
    fi
    reqs=$(requests "$l0")
    usage=$(bucket_usage "$conf" "$bucket")
    n=$(timeout "$CMD_TIMEOUT" "${RCLONE[@]}" --config "$conf" lsf -R --files-only crypt: | wc -l)
    [[ $n -eq ${NFILES[$w]} ]] || die "rclone: $n files in crypt:, ${NFILES[$w]} in the input"
    # shellcheck disable=SC2086  # "objects bytes" and "uploads all" are word lists
    record "$w" "$(elapsed "$t0" "$t1")" - $usage $reqs
    stop_moto
}

# --- runs -------------------------------------------------------------------------
log "work dir $WORK; REPS=$REPS; workloads ${WORKLOADS[*]}; tresor $TRESOR_BIN; $(rclone version | head -1); moto $(python3 -c 'import importlib.metadata as m; print(m.version("moto"))')"
for ((REP = 1; REP <= REPS; REP++)); do
    if ((REP % 2)); then order=(tresor rclone); else order=(rclone tresor); fi
    for w in "${WORKLOADS[@]}"; do
        for SYS in "${order[@]}"; do
            run=$WORK/$SYS-$w-$REP
            mkdir -p "$run"
            "run_$SYS" "$w" "$run"
            rm -rf --one-file-system "$run"
        done
    done
done

# --- report -----------------------------------------------------------------------
{
    echo
    echo "### tresor vs rclone crypt: upload to loopback S3 (moto), median of $REPS"
    echo
    echo "kernel $(uname -r), $(nproc) cores; $(rclone version | head -1); moto $(python3 -c 'import importlib.metadata as m; print(m.version("moto"))'); tresor local store on $(df --output=source,fstype "${BENCH_WORKDIR:-/tmp}" | tail -1 | tr -s ' ');"
    echo "$INPUTS_DESC"
    echo
    awk -F'\t' '
        function median(s,   a, k, i, j, t) {
            k = split(s, a, " "); if (k == 0) return ""
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        {
            key = $1 SUBSEP $3
            if (!(key in seen)) { seen[key] = 1; keys[++n] = key }
            if (!($3 in wseen)) { wseen[$3] = 1; wl[++nw] = $3 }
            secs[key] = secs[key] " " $4; all[key] = all[key] " " $4
            if ($5 != "-") copy[key] = copy[key] " " $5
            obj[key] = obj[key] " " $6; byt[key] = byt[key] " " $7
            up[key] = up[key] " " $8; rq[key] = rq[key] " " $9; inb[$3] = $10
        }
        END {
            print "| system | workload | seconds (all reps) | copy-only s | MB/s | objects | bytes uploaded | requests PUT+POST / all |"
            print "|---|---|---|---|---|---|---|---|"
            for (w = 1; w <= nw; w++) for (s = 1; s <= 2; s++) {
                sy = (s == 1) ? "tresor" : "rclone"; key = sy SUBSEP wl[w]
                if (!(key in seen)) continue
                S[key] = median(secs[key]); O[key] = median(obj[key])
                c = (key in copy) ? median(copy[key]) : "-"
                printf "| %s | %s | %.2f (%s) | %s | %.1f | %d | %d | %d / %d |\n", sy, wl[w], S[key], substr(all[key], 2), c,
                    inb[wl[w]] / 1e6 / S[key], O[key], median(byt[key]), median(up[key]), median(rq[key])
            }
            print ""
            print "| workload | time tresor/rclone | speedup rclone/tresor | objects rclone/tresor | target | met |"
            print "|---|---|---|---|---|---|"
            for (w = 1; w <= nw; w++) {
                t = "tresor" SUBSEP wl[w]; r = "rclone" SUBSEP wl[w]
                if (!(t in S) || !(r in S)) continue
                tr = S[t] / S[r]; sp = S[r] / S[t]; orat = (O[t] > 0) ? O[r] / O[t] : 0
                if (wl[w] == "large") { target = "tresor MB/s >= rclone"; met = (sp >= 1) ? "yes" : "NO" }
                else { target = ">= 5x faster, >= 100x fewer objects"; met = (sp >= 5 && orat >= 100) ? "yes" : "NO" }
                printf "| %s | %.2f | %.2fx | %.3gx | %s | %s |\n", wl[w], tr, sp, orat, target, met
            }
        }' "$OUT"
    echo
    echo "(seconds: tresor = start of \`cp -a\` into the mount until \`tresor sync\` returns, copy-only = the \`cp\` alone;"
    echo "rclone = \`rclone copy\`. MB/s = input bytes / 1e6 / median seconds. objects, bytes: everything in the bucket"
    echo "afterwards (tresor's include its key file). requests: moto's request log from the start of the timed part"
    echo "until tresor's unmount / rclone's exit.)"
} | tee "$WORK/report.md"
cp "$OUT" "${TMPDIR:-/tmp}/tresor-bench-sync-results.tsv"
log "raw results: ${TMPDIR:-/tmp}/tresor-bench-sync-results.tsv (system rep workload seconds copy_s objects bytes uploads requests input_bytes)"
