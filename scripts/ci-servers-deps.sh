#!/usr/bin/env bash
# Installs the real servers the backend integration tests start on loopback
# (tests/common/servers.rs):
#   S3      moto_server        PyPI moto[server]
#   WebDAV  wsgidav + cheroot  PyPI wsgidav, cheroot
#   SFTP    /usr/sbin/sshd     Debian openssh-server (ssh, sftp, ssh-keygen: openssh-client)
# Idempotent and quiet: only what is missing is installed; the last lines
# report the versions. Python packages go into the interpreter `python3`
# resolves to (override with PYTHON=...); with pyenv their console scripts
# (moto_server, wsgidav) land in /root/.pyenv/shims, which must be on PATH.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
# Resolve once: every pyenv shim call costs a few bash processes.
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
quietly() { # run quietly, show the output only when it fails
    if ! "$@" >"$log" 2>&1; then
        echo "ci-servers-deps: failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

# --- Debian ------------------------------------------------------------------
apt_pkgs=(openssh-server openssh-client)
if ! "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("pip") is None)' 2>/dev/null; then
    apt_pkgs+=(python3-pip)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci-servers-deps: apt-get install ${missing[*]}"
    quietly $SUDO apt-get update -qq
    quietly $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# sshd's privilege separation directory (the fixture creates it too).
$SUDO mkdir -p /run/sshd
$SUDO chmod 0755 /run/sshd

# --- PyPI --------------------------------------------------------------------
# One interpreter start, no heavy imports: which requirements lack a module.
# (moto[server]'s extra is flask + flask_cors; moto_server needs them.)
read -r -a py_missing <<<"$("$PYTHON" - <<'PY'
import importlib.util as u
need = {"moto[server]": ["moto", "flask", "flask_cors"], "wsgidav": ["wsgidav"], "cheroot": ["cheroot"]}
print(" ".join(req for req, mods in need.items() if any(u.find_spec(m) is None for m in mods)))
PY
)"
if [ "${#py_missing[@]}" -gt 0 ]; then
    echo "ci-servers-deps: pip install ${py_missing[*]}"
    pip_args=(--quiet --disable-pip-version-check --no-input --root-user-action=ignore)
    # Debian's own python3 is "externally managed" (PEP 668); pyenv's is not.
    if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_args+=(--break-system-packages)
    fi
    quietly "$PYTHON" -m pip install "${pip_args[@]}" "${py_missing[@]}"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
fi

# --- Report ------------------------------------------------------------------
pyver() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo missing; }
echo "ci-servers-deps: python  $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
echo "ci-servers-deps: moto    $(pyver moto) $(command -v moto_server || echo '(moto_server NOT on PATH)')"
echo "ci-servers-deps: wsgidav $(pyver wsgidav) $(command -v wsgidav || echo '(wsgidav NOT on PATH)'), cheroot $(pyver cheroot)"
echo "ci-servers-deps: sshd    $(/usr/sbin/sshd -V 2>&1 | head -n1)"
echo "ci-servers-deps: ssh     $(ssh -V 2>&1 | head -n1)"

command -v moto_server >/dev/null
command -v wsgidav >/dev/null
command -v ssh-keygen >/dev/null
command -v sftp >/dev/null
test -x /usr/sbin/sshd
