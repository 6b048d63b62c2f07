#!/usr/bin/env bash
# package-test.sh - install the Debian package on this machine and use it the
# way a user does: `man tresor`, completions, the unit template, and a mount
# from an /etc/fstab line through mount(8) and umount(8) (which find
# /usr/sbin/mount.fuse.tresor and umount.fuse.tresor by the type fuse.tresor).
#
#   DEB   the package (default: the newest target/debian/tresor_*.deb)
# Needs root. Changes the system: installs the package (it stays installed)
# and adds one /etc/fstab line, removed again on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEB=${DEB:-$(ls -t target/debian/tresor_*.deb | head -n 1)}
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
step() { echo "package-test: $*"; }

step "installing $DEB"
apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "./$DEB" >/dev/null \
    || fail "apt-get install ./$DEB"
dpkg -s tresor >/dev/null || fail "dpkg does not list tresor"

step "files in place"
[[ -x /usr/bin/tresor ]] || fail "/usr/bin/tresor missing"
/usr/bin/tresor --version
for h in mount.fuse.tresor umount.fuse.tresor mount.tresor umount.tresor; do
    [[ "$(readlink -f "/usr/sbin/$h")" == /usr/bin/tresor ]] || fail "/usr/sbin/$h is no link to /usr/bin/tresor"
done
man -w tresor >/dev/null || fail "man tresor: no manual entry"
man -w tresor-mount >/dev/null || fail "man tresor-mount: no manual entry"
MANWIDTH=80 man tresor 2>/dev/null | grep -q "EXIT STATUS" || fail "man tresor has no EXIT STATUS section"
[[ -s /usr/share/bash-completion/completions/tresor ]] || fail "bash completion missing"
grep -q "_tresor" /usr/share/bash-completion/completions/tresor || fail "bash completion is not tresor's"
[[ -s /usr/share/zsh/vendor-completions/_tresor ]] || fail "zsh completion missing"
[[ -s /usr/share/fish/vendor_completions.d/tresor.fish ]] || fail "fish completion missing"
unit=/usr/lib/systemd/user/tresor@.service
[[ -s $unit ]] || fail "$unit missing"
grep -q "^ExecStart=/usr/bin/tresor mount --foreground" "$unit" || fail "$unit does not run /usr/bin/tresor"
if command -v systemd-analyze >/dev/null; then
    work=$(mktemp -d)
    cp "$unit" "$work/tresor@demo.service"
    HOME=$work XDG_RUNTIME_DIR=$work systemd-analyze verify --user --man=no --generators=no \
        "$work/tresor@demo.service" || fail "systemd-analyze rejects the template"
    rm -rf "$work"
fi

step "mount from /etc/fstab"
root=$(mktemp -d /tmp/tresor-package.XXXXXX)
vault=$root/vault
mnt=$root/mnt
pass=$root/passphrase
mkdir -p "$mnt"
printf 'package test passphrase\n' > "$pass"
chmod 600 "$pass"
cp /etc/fstab "$root/fstab.orig"
cleanup() {
    umount "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
    cp "$root/fstab.orig" /etc/fstab
    rm -rf "$root"
    # Leave the machine as found: the package's /usr/sbin/mount.fuse.tresor
    # would otherwise take mount(8)'s fuse.tresor mounts from mount.fuse3
    # (tests/fstab.rs relies on mount.fuse3's setuid=USER).
    dpkg -r tresor >/dev/null 2>&1 || true
}
trap cleanup EXIT
/usr/bin/tresor init --vault "$vault" --passphrase-file "$pass" >/dev/null
echo "$vault $mnt fuse.tresor noauto,passphrase_file=$pass 0 0" >> /etc/fstab
timeout 120 mount "$mnt" || fail "mount $mnt (from /etc/fstab)"
grep -q " $mnt fuse.tresor " /proc/mounts || fail "$mnt is not a fuse.tresor mount"
head -c 3000000 /dev/urandom > "$root/sample"
cp "$root/sample" "$mnt/sample"
timeout 120 umount "$mnt" || fail "umount $mnt"
! grep -q " $mnt " /proc/mounts || fail "$mnt still mounted after umount"
# umount.fuse.tresor waits for the daemon; a root umount(8) may skip the
# helper (no utab entry), so give the daemon's final commit a bounded wait:
# the daemon holds an exclusive flock on daemon.lock until it has exited.
wait_daemon_exit() {
    timeout 60 flock --shared "$vault/daemon.lock" true || fail "the daemon did not exit after umount"
}
wait_daemon_exit
[[ ! -e "$mnt/sample" ]] || fail "the file is visible in the plain directory"
timeout 120 mount "$mnt" || fail "mount $mnt again"
cmp "$root/sample" "$mnt/sample" || fail "the file read back differs"
timeout 120 umount "$mnt" || fail "umount $mnt again"
wait_daemon_exit
/usr/bin/tresor fsck --vault "$vault" --passphrase-file "$pass" >/dev/null || fail "fsck after the fstab mounts"
step "ok: the package installs, documents itself and mounts from /etc/fstab"
