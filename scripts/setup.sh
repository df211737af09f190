#!/usr/bin/env bash
# Prepare this machine to develop and test bot-bottle. Idempotent.
#
#  1. system packages (as root on Debian/Ubuntu): Docker engine, debootstrap, git, sshd, tmux
#  2. a running Docker engine (starts dockerd in the background if none answers)
#  3. the local base image (scripts/base-image.sh)
#  4. uv and the workspace virtualenv (.venv) from the lock file, Python >= 3.12
#
# Environment:
#   BOT_BOTTLE_PYTHON   interpreter to build .venv with (default: newest 3.13/3.12 found)
#   BOT_BOTTLE_SKIP_DOCKER=1  skip steps 1-3 (no Docker on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# tmux: the console test runs `bot-bottle supervise` in a real terminal.
# e2fsprogs, util-linux, mount, passwd: the fault tests' loop-mounted disks,
# a second engine in its own network namespace, and two real users.
# docker-registry: the kubernetes backend's image push, against a registry
# its test starts on loopback (the packaged service is not used).
# gcc, libc6-dev: bot-bottle-dlp's optional C run finder, built by uv sync
# (without them the DLP scan is the same, only slower, and its test fails).
APT_PACKAGES=(docker.io debootstrap git openssh-server openssh-client curl iptables iproute2 tmux
              e2fsprogs util-linux mount passwd docker-registry gcc libc6-dev)

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "missing system packages: ${missing[*]} (install them with your package manager and rerun)"
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_answers() { timeout 5 docker version >/dev/null 2>&1; }

start_docker() {
  docker_answers && { log "Docker engine is running"; return 0; }
  [[ $EUID -eq 0 ]] || die "the Docker engine is not running and starting it needs root (sudo dockerd &)"
  log "starting dockerd (log: /var/log/bot-bottle-dockerd.log)"
  nohup dockerd >/var/log/bot-bottle-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker_answers && { log "Docker engine is up"; return 0; }
    sleep 1
  done
  tail -20 /var/log/bot-bottle-dockerd.log >&2 || true
  die "dockerd did not answer within 60 s (see /var/log/bot-bottle-dockerd.log)"
}

find_python() {
  local cand
  if [[ -n "${BOT_BOTTLE_PYTHON:-}" ]]; then echo "$BOT_BOTTLE_PYTHON"; return; fi
  # Explicit paths first: pyenv shims of a version that is not selected fail
  # when run, so test that each candidate actually starts.
  for cand in python3.13 python3.12 \
      "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3 \
      "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3 python3; do
    if "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      command -v "$cand" 2>/dev/null || echo "$cand"
      return
    fi
  done
  return 1
}

ensure_uv() {
  if uv --version >/dev/null 2>&1; then UV=(uv); return; fi
  if python3 -m uv --version >/dev/null 2>&1; then UV=(python3 -m uv); return; fi
  log "installing uv"
  python3 -m pip install --quiet uv || die "could not install uv (pip install uv)"
  UV=(python3 -m uv)
}

# gVisor: Debian's runsc is installed, but registered with the engine only on
# request (BOT_BOTTLE_REGISTER_GVISOR=1): with Docker 20.10 and runsc 20221219
# here, runsc needs --network=none (else "cannot run with network enabled in
# root network namespace"), and then the agent's loopback is gVisor's own
# stack, which the relay container cannot serve. The docker backend probes
# exactly that at launch and falls back to runc, saying why (`bot-bottle
# doctor` shows the probe's verdict); registering it here would only add the
# probe to every launch. Registration edits /etc/docker/daemon.json and
# reloads dockerd with SIGHUP (runtimes are reloadable; running containers
# are not touched).
install_gvisor() {
  if ! command -v runsc >/dev/null; then
    [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || { log "runsc not installed (optional)"; return 0; }
    apt-cache show runsc >/dev/null 2>&1 || { log "no runsc package here (optional)"; return 0; }
    log "installing runsc (gVisor)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runsc >/dev/null
  fi
  [[ "${BOT_BOTTLE_REGISTER_GVISOR:-}" == "1" ]] || return 0
  [[ $EUID -eq 0 ]] || die "registering runsc with dockerd needs root"
  local cfg=/etc/docker/daemon.json
  mkdir -p /etc/docker
  python3 - "$cfg" "$(command -v runsc)" <<'PY'
import json, sys, pathlib
path, runsc = pathlib.Path(sys.argv[1]), sys.argv[2]
cfg = json.loads(path.read_text()) if path.exists() else {}
cfg.setdefault("runtimes", {})["runsc"] = {"path": runsc, "runtimeArgs": ["--network=none"]}
path.write_text(json.dumps(cfg, indent=2) + "\n")
PY
  kill -HUP "$(cat /var/run/docker.pid)" && log "registered runsc with dockerd (reloaded with SIGHUP)"
}

if [[ "${BOT_BOTTLE_SKIP_DOCKER:-}" != "1" ]]; then
  install_system_packages
  start_docker
  install_gvisor
  scripts/base-image.sh
fi

ensure_uv
PY="$(find_python)" || die "Python 3.12 or newer is required (set BOT_BOTTLE_PYTHON to one)"
log "syncing .venv with $PY"
"${UV[@]}" sync --locked --python "$PY" --quiet
log "ready: .venv/bin/bot-bottle"
