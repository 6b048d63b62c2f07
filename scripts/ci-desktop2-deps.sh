#!/usr/bin/env bash
# ci-desktop2-deps.sh - Debian packages the fstab / systemd / man-page tests
# need on top of .ci/run's list (tests/fstab.rs, tests/systemd.rs,
# tests/cli_docs.rs). Idempotent and quiet: installs only what is missing.
#   systemd      systemd-analyze verify --user, systemd-escape (no running systemd needed)
#   groff-base   groff: the man pages must render without warnings
#   man-db       man -l (checked when present)
#   util-linux   unshare, nsenter, setpriv (a private mount namespace per fstab test)
#   mount        mount(8)/umount(8) with --fstab and helper lookup
#   fuse3        mount.fuse3, fusermount3 (setuid, for the ordinary-user mount)
#   passwd       useradd (the fstab test's ordinary user)
#   chromium     headless browser: the sovereignty report must render (tests/sovereignty.rs)
#   fonts-dejavu-core  the report's font, so its screenshot has text
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(systemd groff-base man-db util-linux mount fuse3 passwd chromium fonts-dejavu-core)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    echo "installed: ${missing[*]}"
else
    echo "already installed: ${PACKAGES[*]}"
fi
