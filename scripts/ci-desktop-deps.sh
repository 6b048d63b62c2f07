#!/usr/bin/env bash
# ci-desktop-deps.sh - Debian packages for the desktop tests (tests/gio.rs,
# tests/file_manager.rs) and scripts/bench-random-read.sh. Idempotent and
# quiet: installs only what is missing, prints one line.
#   libglib2.0-bin  gio (copy/move/rename/remove/trash/info/set)
#   gvfs            the trash:/// backend (gvfsd-trash) that `gio trash
#                   --list/--restore/--empty` need; it runs on a D-Bus session
#   dbus            dbus-run-session (a private session bus per test)
#   xvfb            the X server the file manager draws on
#   pcmanfm         the file manager under test
#   xdotool         finds its window, reads the title, types Ctrl+A / Ctrl+C
#   xclip           reads the clipboard PCManFM filled (the listed file URIs)
#   imagemagick     `import -window root` takes the screenshot; `identify`
#   fonts-dejavu-core  a font, so the window shows readable file names
#   fio             random 4 KiB reads in scripts/bench-random-read.sh
#   gocryptfs bindfs  the systems the benchmark compares against
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(libglib2.0-bin gvfs dbus xvfb pcmanfm xdotool xclip imagemagick fonts-dejavu-core
    fio gocryptfs bindfs)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    echo "desktop test packages: all present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
echo "desktop test packages installed: ${missing[*]}"
