#!/usr/bin/env bash
# edgekit developer entry point. Works on a fresh Debian 12 / Ubuntu 24.04 machine.
#   ./dev.sh demo    end to end on the built-in virtual Pi cluster (needs root: sshd, cgroups, users)
#   ./dev.sh test    ruff + the whole test suite (the command CI runs)
#   ./dev.sh setup   only install what the project needs (apt packages, .venv)
# As non-root, apt packages are installed with sudo when it is available; the virtual cluster
# (and the tests that use it) need root because they create users, cgroups and sshd instances.
set -euo pipefail
cd "$(dirname "$0")"

# systemd: each virtual node runs a systemd user manager, as a Pi does (docs/VIRTUAL-CLUSTER.md)
# mmdebstrap + arch-test: the arm64 Debian userland of aarch64 virtual nodes (--arch aarch64)
# wrk: a load generator in C for the serving benchmarks (benchmarks/wrkload.py)
APT_PACKAGES=(openssh-server openssh-client gcc g++ gcc-aarch64-linux-gnu
              libc6-dev-arm64-cross iproute2 python3 python3-venv python3-dev tmux procps
              systemd mmdebstrap arch-test wrk)
VENV=.venv

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "error: need root (or sudo) to install: ${APT_PACKAGES[*]}" >&2
    echo "       install them yourself, then rerun ./dev.sh" >&2
    exit 2
  fi
}

install_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing apt packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# qemu-user 8.0 or newer, static, for aarch64 virtual nodes: Debian 12's own 7.2 crashes on the
# aarch64 onnxruntime wheel, so there it comes from bookworm-backports (10.x, static
# qemu-aarch64 + binfmt entries); Ubuntu 24.04 (8.2) and Debian 13 (10.x) have it themselves.
install_qemu() {
  local have
  # no qemu yet is the usual case on a fresh machine: not an error under `set -e -o pipefail`
  have=$( { qemu-aarch64 --version 2>/dev/null || true; } |
          sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
  if [ -n "$have" ] && [ "$have" -ge 8 ]; then return; fi
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    local list=/etc/apt/sources.list.d/edgekit-bookworm-backports.sources
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # the same mirror as the machine's own bookworm entry
      local uri
      uri=$(grep -rhs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | head -1 |
            awk '{print $2}')
      [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | grep -v security |
                             awk '{print $2}' | head -1)
      log "adding bookworm-backports ($uri) for qemu-user 10"
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" /usr/share/keyrings/debian-archive-keyring.gpg | as_root tee "$list" >/dev/null
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports \
      qemu-user qemu-user-binfmt >/dev/null
  else
    as_root apt-get update -qq
    # Ubuntu: the static build is its own package; Debian 13+: qemu-user is static
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null \
      || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
  fi
}

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return
    fi
  done
  echo "error: edgekit needs Python 3.11 or newer (Debian 12 and Ubuntu 24.04 have it)" >&2
  exit 2
}

install_python() {
  local stamp="$VENV/.edgekit-install-stamp" want
  want=$( { cat pyproject.toml setup.py; find native -name '*.[ch]' -type f | sort | xargs cat; } \
          | sha256sum | cut -c1-16)
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$(pick_python)" -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing edgekit and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
  fi
}

setup() { install_apt; install_qemu; install_python; }

case "${1:-}" in
  setup) setup ;;
  demo)  setup; shift; exec "$VENV/bin/edgekit" demo "$@" ;;
  test)  setup; shift
         # the deploy tests build an offline wheelhouse for the virtual nodes: keep it between runs
         export EDGEKIT_TEST_WHEEL_CACHE="${EDGEKIT_TEST_WHEEL_CACHE:-$HOME/.cache/edgekit/test-wheelhouse}"
         "$VENV/bin/ruff" check edgekit tests benchmarks
         exec "$VENV/bin/python" -m pytest -q -ra "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
