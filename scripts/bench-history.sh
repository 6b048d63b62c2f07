#!/usr/bin/env bash
# bench-history.sh - opening an old state in MOUNT/.snapshots/ of a vault with
# FILES files (issue 14's target: <= 2 s for 100,000 files).
#
# Usage (as root): scripts/bench-history.sh      FILES=20000 scripts/bench-history.sh
#
# A fresh moto_server (S3 API, in memory) on 127.0.0.1 and a fresh vault with
# it as backend. FILES small files (1-100 bytes, 100 per directory) are copied
# into the mount with `cp -a` from /dev/shm, then `tresor sync` (generation
# A); one file is changed and `tresor sync` again (generation B). The vault
# is unmounted and mounted again (which clears VAULT/history/), then timed:
#   list     `ls MNT/.snapshots/` (the kept generations, from the backend)
#   open     `stat` of one file in the older generation's directory: its
#            index is assembled (blocks the local index already has are
#            reused, the rest downloaded) and opened read-only
#   again    the same `stat` once more (index already open)
# and the daemon's log line says how many index blocks were found locally
# and how many were downloaded.
#
# Environment: FILES (100000), TRESOR_BIN (target/ci/tresor),
# TRESOR_MOTO_SERVER (moto_server), BENCH_WORKDIR (/tmp).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=${FILES:-100000}
TRESOR_BIN=${TRESOR_BIN:-$ROOT/target/ci/tresor}
MOTO=${TRESOR_MOTO_SERVER:-moto_server}
CMD_TIMEOUT=900
log() { printf '%s bench-history: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for t in fusermount3 curl python3 timeout setsid "$MOTO"; do command -v "$t" >/dev/null || die "missing $t"; done
[[ -x $TRESOR_BIN ]] || die "$TRESOR_BIN not built (cargo build --profile ci, or set TRESOR_BIN)"

WORK=$(mktemp -d -p "${BENCH_WORKDIR:-/tmp}" tresor-bench-history.XXXXXX)
SRC=$(mktemp -d -p /dev/shm tresor-bench-history-src.XXXXXX)
V=$WORK/vault M=$WORK/mnt PF=$WORK/passphrase
mkdir -p "$M"
echo "bench-history-passphrase-9Qw4" >"$PF"
MOTO_PID=""
is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
    if is_mounted "$M"; then
        timeout 120 "$TRESOR_BIN" unmount "$M" >/dev/null 2>&1 || fusermount3 -u -z "$M" 2>/dev/null || true
    fi
    [[ -n $MOTO_PID ]] && { kill -KILL -- "-$MOTO_PID" 2>/dev/null || kill -KILL "$MOTO_PID" 2>/dev/null || true; }
    rm -rf "$SRC"
    is_mounted "$M" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid "$MOTO" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
AUTH="AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
for ((i = 0; i < 300; i++)); do
    [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/" || true) == 200 ]] && break
    sleep 0.2
done
code=$(curl -s -o /dev/null -m 10 -X PUT -H "Authorization: $AUTH" -w '%{http_code}' "http://127.0.0.1:$PORT/bench-history")
[[ $code == 200 ]] || die "moto: create bucket: HTTP $code"

log "generating $FILES files in $SRC"
python3 - "$SRC" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
r = random.Random(14)
for i in range(n):
    d = os.path.join(root, f"d{i // 100:04d}")
    if i % 100 == 0:
        os.mkdir(d)
    with open(os.path.join(d, f"f{i % 100:02d}"), "wb") as f:
        f.write(r.randbytes(r.randint(1, 100)))
EOF

tr() { timeout "$CMD_TIMEOUT" "$TRESOR_BIN" "$@" </dev/null; }
tr init --vault "$V" --passphrase-file "$PF" >/dev/null
echo secret >"$WORK/s3.secret"
tr backend add s3 --vault "$V" --passphrase-file "$PF" --s3 --endpoint "http://127.0.0.1:$PORT" \
    --region us-east-1 --bucket bench-history --access-key-id bench \
    --secret-access-key-file "$WORK/s3.secret" --location DE --operator Bench --operator-country DE >/dev/null
tr mount --vault "$V" --passphrase-file "$PF" "$M" >/dev/null
t0=$(date +%s.%N)
cp -a "$SRC/." "$M/"
t1=$(date +%s.%N)
log "copied $FILES files into the mount in $(echo "$t1 - $t0" | bc) s"
tr sync --vault "$V" --passphrase-file "$PF" --timeout 800 --quiet
echo changed >"$M/d0000/f00"
tr sync --vault "$V" --passphrase-file "$PF" --timeout 800 --quiet
tr unmount "$M" >/dev/null
index_bytes=$(stat -c %s "$V/index.sqlite")
tr mount --vault "$V" --passphrase-file "$PF" "$M" >/dev/null

ms() { python3 -c 'import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000))' "$1" "$2"; }
t0=$(date +%s.%N)
mapfile -t gens < <(ls "$M/.snapshots/")
t1=$(date +%s.%N)
((${#gens[@]} >= 2)) || die "expected 2 generations in .snapshots, got: ${gens[*]}"
old=${gens[0]}
stat "$M/.snapshots/$old/d0000/f00" >/dev/null
t2=$(date +%s.%N)
stat "$M/.snapshots/$old/d0000/f01" >/dev/null
t3=$(date +%s.%N)
[[ $(cat "$M/.snapshots/$old/d0000/f00") != changed ]] || die "the old generation shows the new content"
line=$(grep -o 'snapshot view: generation .*' "$V/tresor.log" | tail -1)
tr unmount "$M" >/dev/null
echo
echo "| files | index | list .snapshots | open old generation | next lookup | blocks |"
echo "|---|---|---|---|---|---|"
echo "| $FILES | $((index_bytes / 1000)) kB | $(ms "$t0" "$t1") ms | $(ms "$t1" "$t2") ms | $(ms "$t2" "$t3") ms | ${line#snapshot view: } |"
