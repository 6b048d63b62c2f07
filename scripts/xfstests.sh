#!/usr/bin/env bash
# xfstests.sh - run the kernel's filesystem suite (fstests/xfstests) against
# tresor, from the copy in /work/shared/xfstests (CI machines cannot fetch it).
#
# Usage: scripts/xfstests.sh [TESTS_OR_GROUP_ARGS...]            (as root)
#   no arguments:   ./check -E tests/xfstests.exclude -g quick
#   with arguments: ./check -E tests/xfstests.exclude ARGS...
#                   e.g. scripts/xfstests.sh generic/001 generic/736
#
# What it does: installs the build packages (apt-get) if missing, unpacks the
# xfstests tarball into $XFS_WORK, applies fuse-local.patch, builds it
# (make -j2), creates the users fsgqa, fsgqa2 and 123456-fsgqa, and in a
# private mount namespace installs /sbin/mount.fuse.tresor (strips the
# `tresor:` tag of the source, the fsname tresor gives its mounts, and runs a
# copy of $TRESOR_BIN in its mount-helper form) and /sbin/umount.fuse.tresor,
# creates the TEST and SCRATCH vaults with `tresor init`, writes the
# HOST_OPTIONS config and runs ./check with every test capped at
# FSTESTS_TEST_TIMEOUT seconds (fuse-local.patch; a killed test prints
# LOCAL-TIMEOUT and counts as failed).
#
# Exclude list (default tests/xfstests.exclude): `generic/NNN  # reason`, or the
# reason on the `#` line(s) above; excluded tests are not run.
#
# Environment:
#   TRESOR_BIN            binary under test (default: target/ci/tresor)
#   XFSTESTS_SRC          dir with the tarball, patch (default /work/shared/xfstests)
#   XFS_WORK              work dir: build, binary copy (default target/xfstests)
#   XFS_RUN               vaults, mounts, results (default $XFS_WORK/run; one per
#                         concurrent run)
#   XFS_EXCLUDE           exclude list (default tests/xfstests.exclude)
#   FSTESTS_TEST_TIMEOUT  seconds per test (default 120)
#   FSTESTS_RETRY_TIMEOUT tests killed at that cap run once more, alone, with
#                         this cap (default 900; 0: no second run). The cap
#                         bounds the run, it is not a speed assertion: a test
#                         that passes in the second run counts as passed and
#                         is listed as slow. generic/069 (3 M 4-byte O_APPEND
#                         writes) took 270 s here when quiet, gocryptfs 400 s.
#   XFS_FS                tresor (default) or gocryptfs: the anchor, run the same
#                         way (gocryptfs -init vaults, mount -t fuse.gocryptfs via
#                         the stock mount.fuse3, plain umount), for the
#                         pass-for-pass comparison the README reports
# Exit: 0 if every failure is excluded (or no test failed); 1 on failures;
#       2 on setup errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRESOR_BIN=$(realpath -m "${TRESOR_BIN:-$ROOT/target/ci/tresor}")
XFS_FS=${XFS_FS:-tresor}
[[ $XFS_FS == tresor || $XFS_FS == gocryptfs ]] || { echo "xfstests.sh: XFS_FS must be tresor or gocryptfs" >&2; exit 2; }
# ../shared/xfstests beside the checkout (as on the development machines)
if [[ -z "${XFSTESTS_SRC:-}" ]]; then
    XFSTESTS_SRC=$ROOT/../shared/xfstests
    [[ -d $XFSTESTS_SRC ]] || XFSTESTS_SRC=/work/shared/xfstests
fi
XFS_WORK=$(realpath -m "${XFS_WORK:-$ROOT/target/xfstests}")
XFS_EXCLUDE=$(realpath -m "${XFS_EXCLUDE:-$ROOT/tests/xfstests.exclude}")
export FSTESTS_TEST_TIMEOUT=${FSTESTS_TEST_TIMEOUT:-120}
FSTESTS_RETRY_TIMEOUT=${FSTESTS_RETRY_TIMEOUT:-900}
VERSION=v2026.01.27
TARBALL=$XFSTESTS_SRC/xfstests-$VERSION.tar.gz
PATCH=$XFSTESTS_SRC/fuse-local.patch

die() { echo "xfstests.sh: $*" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || die "must run as root (mounts, useradd, apt-get)"
[[ -c /dev/fuse ]] || die "/dev/fuse missing"
if [[ $XFS_FS == tresor ]]; then
    [[ -x "$TRESOR_BIN" ]] || die "$TRESOR_BIN not built (cargo build --profile ci)"
else
    command -v gocryptfs >/dev/null || die "gocryptfs not installed (apt-get install gocryptfs)"
fi
[[ -f "$TARBALL" && -f "$PATCH" ]] || die "$TARBALL or $PATCH missing"
[[ -f "$XFS_EXCLUDE" ]] || die "exclude list $XFS_EXCLUDE missing"

# --- build packages -----------------------------------------------------------
PACKAGES=(xfsprogs xfslibs-dev uuid-dev libtool-bin e2fsprogs automake autoconf gcc make
    libattr1-dev libacl1-dev libaio-dev libgdbm-dev liburing-dev pkg-config bc psmisc
    fio gawk quota attr acl fuse3 util-linux)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
fi

# --- unpack, patch, build (once per tarball+patch) ------------------------------
SRC=$XFS_WORK/xfstests-$VERSION
STAMP=$XFS_WORK/.built-$(cat "$TARBALL" "$PATCH" | sha256sum | cut -c1-16)
if [[ ! -f "$STAMP" ]]; then
    echo "building xfstests $VERSION in $SRC"
    rm -rf --one-file-system "$SRC" "$XFS_WORK"/.built-*
    mkdir -p "$XFS_WORK"
    tar xzf "$TARBALL" -C "$XFS_WORK"
    patch -d "$SRC" -p1 --quiet <"$PATCH"
    make -C "$SRC" -j2 >"$XFS_WORK/build.log" 2>&1 || { tail -40 "$XFS_WORK/build.log" >&2; die "make failed"; }
    touch "$STAMP"
fi

# --- users ----------------------------------------------------------------------
for u in fsgqa fsgqa2 123456-fsgqa; do
    id "$u" >/dev/null 2>&1 && continue
    useradd --user-group --create-home --shell /bin/bash "$u" 2>/dev/null ||
        useradd --badname --user-group --create-home --shell /bin/bash "$u" ||
        die "useradd $u failed"
done

# --- private mount namespace, mount helpers -----------------------------------------
# mount(8) runs: mount.fuse.tresor tresor:/abs/vault MOUNTPOINT [-o OPTS] [...]
# and umount(8) runs umount.fuse.tresor MOUNTPOINT for fuse.tresor mounts. The
# Debian package (or another checkout) may own /sbin/{u,}mount.fuse.tresor, so
# the whole run happens in a private mount namespace in which our helpers are
# overlaid on /sbin; nothing outside changes.
if [[ "${TRESOR_XFSTESTS_NS:-}" != 1 ]]; then
    command -v unshare >/dev/null || die "unshare missing (util-linux)"
    TRESOR_XFSTESTS_NS=1 exec unshare --mount --propagation private -- "$0" "$@"
fi
BIN_DIR=$XFS_WORK/bin
HELPERS=$BIN_DIR/sbin
rm -rf "$HELPERS" && mkdir -p "$HELPERS"
if [[ $XFS_FS == tresor ]]; then
    # a copy, so that a rebuild during the run does not change the binary under test
    cp -f "$TRESOR_BIN" "$BIN_DIR/tresor.tmp" && mv -f "$BIN_DIR/tresor.tmp" "$BIN_DIR/tresor"
    TRESOR=$BIN_DIR/tresor
    cat >"$HELPERS/mount.fuse.tresor" <<EOF
#!/bin/sh
# from tresor's scripts/xfstests.sh: mount(8) -> tresor's mount-helper form
# (tresor VAULT MOUNTPOINT -o OPTS), with the source's tresor: tag stripped.
src="\$1"; mnt="\$2"; shift 2
exec '$TRESOR' "\${src#tresor:}" "\$mnt" "\$@"
EOF
    # tresor itself as umount.fuse.tresor: umount(8) then waits for the daemon's
    # final flush, so the next mount of the vault does not find it still locked
    ln -s "$TRESOR" "$HELPERS/umount.fuse.tresor"
else
    # gocryptfs names its mount after the cipher directory, which umount(8)
    # takes for a mount point; tag it (fsname=gocryptfs:DIR), as tresor does
    cat >"$HELPERS/mount.fuse.gocryptfs" <<'EOF'
#!/bin/sh
# from tresor's scripts/xfstests.sh: gocryptfs:/abs/cipherdir -> gocryptfs
src="$1"; mnt="$2"; shift 2
exec /sbin/mount.fuse3 "${src#gocryptfs:}" "$mnt" -t fuse.gocryptfs -o "fsname=$src" "$@"
EOF
fi
chmod 755 "$HELPERS"/mount.fuse.*
# overlay our helpers over the real /sbin (a merged-/usr /sbin is a link):
# /sbin/mount.fuse.tresor may be a symlink, which a bind mount would follow
SBIN=$(realpath /sbin)
mount -t overlay overlay -o "lowerdir=$HELPERS:$SBIN" "$SBIN" || die "cannot overlay $HELPERS on $SBIN"

# --- vaults, mount points, config ---------------------------------------------------
RUN=$(realpath -m "${XFS_RUN:-$XFS_WORK/run}")
TEST_MNT=$RUN/test
SCRATCH_MNT_DIR=$RUN/scratch
PASSFILE=$RUN/passphrase
is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
unmount_all() {
    local m i
    for m in "$TEST_MNT" "$SCRATCH_MNT_DIR"; do
        is_mounted "$m" || continue
        if [[ $XFS_FS == tresor ]]; then
            timeout 120 "$TRESOR" unmount "$m" >/dev/null 2>&1 || true
        else
            umount "$m" 2>/dev/null || true
        fi
        for ((i = 0; i < 50; i++)); do is_mounted "$m" || break; sleep 0.1; done
        if is_mounted "$m"; then
            echo "forcing lazy unmount of $m" >&2
            umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
        fi
    done
}
unmount_all # leftovers of an interrupted run
rm -rf --one-file-system "$RUN"
mkdir -p "$TEST_MNT" "$SCRATCH_MNT_DIR"
# the fsgqa users must reach the mount points (allow_other)
for d in "$RUN" "$(dirname "$RUN")" "$XFS_WORK" "$(dirname "$XFS_WORK")"; do chmod o+x "$d"; done
printf 'xfstests-%s%s\n' "$RANDOM" "$RANDOM" >"$PASSFILE"
chmod 600 "$PASSFILE"
CONFIG=$RUN/xfstests.config
if [[ $XFS_FS == gocryptfs ]]; then
    for v in test scratch; do
        mkdir -p "$RUN/gc-$v"
        gocryptfs -init -q -passfile "$PASSFILE" "$RUN/gc-$v" </dev/null >"$RUN/init-$v.log" 2>&1 ||
            { cat "$RUN/init-$v.log" >&2; die "gocryptfs -init $RUN/gc-$v failed"; }
    done
    DEV_PREFIX=gocryptfs:$RUN/gc-
    # quiet,nosyslog: gocryptfs's mount chatter (and its "syslog delivery
    # error" where no syslog runs) would land in the output of the tests
    # that mount the scratch filesystem themselves (a first run without it:
    # 71 failures, generic/062 among them)
    OPTS="-o passfile=$PASSFILE,allow_other,quiet,nosyslog"
else
    for v in test scratch; do
        "$TRESOR" init --vault "$RUN/tr-$v" --passphrase-file "$PASSFILE" </dev/null >"$RUN/init-$v.log" 2>&1 ||
            { cat "$RUN/init-$v.log" >&2; die "tresor init $RUN/tr-$v failed"; }
    done
    DEV_PREFIX=tresor:$RUN/tr-
    # allow_dev,allow_suid: tresor mounts nodev,nosuid unless told, and mount(8)
    # drops plain dev/suid (generic/011 and 184 open device nodes they create)
    OPTS="-o passphrase_file=$PASSFILE,allow_other,allow_dev,allow_suid"
fi
cat >"$CONFIG" <<EOF
export FSTYP=fuse
export FUSE_SUBTYP=.$XFS_FS
export TEST_DEV=${DEV_PREFIX}test
export TEST_DIR=$TEST_MNT
export SCRATCH_DEV=${DEV_PREFIX}scratch
export SCRATCH_MNT=$SCRATCH_MNT_DIR
export TEST_FS_MOUNT_OPTS="$OPTS"
export MOUNT_OPTIONS="$OPTS"
export RESULT_BASE=$RUN/results
EOF

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -f "$RUN/check.pid" ]]; then # interrupted (e.g. CI's overall timeout)
        kill -TERM "$(cat "$RUN/check.pid")" 2>/dev/null || true
        sleep 5
    fi
    unmount_all
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- exclude list -> ./check -E file ------------------------------------------------
EXCL=$RUN/exclude.txt
declare -A REASON=()
pending=""
while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" =~ ^[[:space:]]*#[[:space:]]*(.*)$ ]]; then
        pending="${pending:+$pending }${BASH_REMATCH[1]}"
        continue
    fi
    [[ "$line" =~ ^[[:space:]]*$ ]] && { pending=""; continue; }
    [[ "$line" =~ ^[[:space:]]*([a-z0-9]+/[0-9]+)[[:space:]]*(#[[:space:]]*(.*))?$ ]] ||
        die "$XFS_EXCLUDE: cannot parse: $line"
    reason=${BASH_REMATCH[3]:-$pending}
    [[ -n "$reason" ]] || die "$XFS_EXCLUDE: ${BASH_REMATCH[1]} has no reason"
    REASON[${BASH_REMATCH[1]}]=$reason
done <"$XFS_EXCLUDE"
printf '%s\n' "${!REASON[@]}" | sort >"$EXCL"

# --- run --------------------------------------------------------------------------
(($#)) || set -- -g quick
[[ $XFS_FS == tresor ]] && UNDER_TEST="tresor ($TRESOR_BIN)" || UNDER_TEST="$(gocryptfs --version | head -1)"
echo "xfstests $VERSION on $UNDER_TEST, ${#REASON[@]} excluded, ${FSTESTS_TEST_TIMEOUT}s per test: $*"
LOG=$RUN/check.log
rc=0
(cd "$SRC" && echo "$BASHPID" >"$RUN/check.pid" && HOST_OPTIONS=$CONFIG exec ./check -E "$EXCL" "$@") 2>&1 |
    tee "$LOG" || rc=$?
rm -f "$RUN/check.pid"

# --- summary ----------------------------------------------------------------------
ran=$(sed -n 's/^Ran: //p' "$LOG" | tail -1 | wc -w)
notrun=$(sed -n 's/^Not run: //p' "$LOG" | tail -1 | wc -w)
read -r -a failed <<<"$(sed -n 's/^Failures: //p' "$LOG" | tail -1)"
# A killed test's LOCAL-TIMEOUT line is in its .out.bad; check's diff in the
# log shows only the first lines of a failure, so it may not show there.
timed_out=()
for t in "${failed[@]}"; do
    grep -qs 'LOCAL-TIMEOUT' "$RUN/results/$t.out.bad" && timed_out+=("$t")
done
# --- second run of the tests killed at the cap, with the longer cap -------------
slow=()
if ((${#timed_out[@]})) && ((FSTESTS_RETRY_TIMEOUT > FSTESTS_TEST_TIMEOUT)); then
    echo
    echo "running again with a ${FSTESTS_RETRY_TIMEOUT} s cap: ${timed_out[*]}"
    RETRY_LOG=$RUN/check-retry.log
    (cd "$SRC" && echo "$BASHPID" >"$RUN/check.pid" &&
        FSTESTS_TEST_TIMEOUT=$FSTESTS_RETRY_TIMEOUT HOST_OPTIONS=$CONFIG exec ./check -E "$EXCL" "${timed_out[@]}") 2>&1 |
        tee "$RETRY_LOG" || true
    rm -f "$RUN/check.pid"
    read -r -a still <<<"$(sed -n 's/^Failures: //p' "$RETRY_LOG" | tail -1)"
    if grep -q '^Ran: ' "$RETRY_LOG"; then
        for t in "${timed_out[@]}"; do
            [[ " ${still[*]} " == *" $t "* ]] || slow+=("$t")
        done
    fi
    kept=()
    for t in "${failed[@]}"; do
        [[ " ${slow[*]} " == *" $t "* ]] || kept+=("$t")
    done
    failed=("${kept[@]}")
    timed_out=()
    for t in "${failed[@]}"; do
        grep -qs 'LOCAL-TIMEOUT' "$RUN/results/$t.out.bad" && timed_out+=("$t")
    done
fi
timeouts=${#timed_out[@]}
echo
echo "xfstests: ran $ran, passed $((ran - notrun - ${#failed[@]})), failed ${#failed[@]}, not run $notrun, timeouts $timeouts (results: $RUN/results)"
((${#slow[@]})) && echo "slow (killed at ${FSTESTS_TEST_TIMEOUT} s, passed with ${FSTESTS_RETRY_TIMEOUT} s): ${slow[*]}"
if ((${#failed[@]})); then
    echo "failures: ${failed[*]}"
    ((timeouts)) && echo "of which hit the cap: ${timed_out[*]}"
    exit 1
fi
if ((ran == 0)) || ! grep -q '^Passed all\|^Ran: \|^Not run: ' "$LOG"; then
    echo "xfstests.sh: ./check ran no test (exit status $rc); see $LOG" >&2
    exit 1
fi
exit 0
