#!/usr/bin/env bash
# Prepares a Debian bookworm host for real shakedown clusters: installs the Debian
# packages the docker node provider and the Kubernetes source build need, enables
# deb-src so `apt-get source kubernetes` works, and starts dockerd when nothing answers.
# Idempotent: a second run only checks. Needs root. Run by `shakedown host setup`.
set -euo pipefail

log() { printf '+ %s\n' "$*" >&2; }
die() { printf 'host setup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "failed to prepare host: must run as root (apt-get and dockerd need it)"
command -v apt-get >/dev/null || die "failed to prepare host: apt-get not found (a Debian host is required)"

packages=(
  docker.io            # the engine the node containers run on
  golang-go            # builds Kubernetes from Debian's source package
  dpkg-dev             # apt-get source
  debootstrap          # node and kube-proxy root filesystems
  busybox-static       # test workload image
  etcd-server          # etcd image
  rsync
  golang-github-modern-go-reflect2-dev  # replaces the vendored reflect2 that panics on Go >= 1.18
  golang-github-json-iterator-go-dev
)

# deb-src for bookworm, once.
src=/etc/apt/sources.list.d/shakedown-src.sources
if [ ! -f "$src" ]; then
  log "write $src"
  cat >"$src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f /var/lib/apt/lists/.shakedown-updated
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ! -f /var/lib/apt/lists/.shakedown-updated ] || [ ${#missing[@]} -gt 0 ]; then
  log apt-get update
  apt-get update -qq
  touch /var/lib/apt/lists/.shakedown-updated
fi
if [ ${#missing[@]} -gt 0 ]; then
  log apt-get install -y --no-install-recommends "${missing[@]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# dockerd: start it when no daemon answers.
if ! docker info >/dev/null 2>&1; then
  log "setsid -f dockerd (log /var/log/shakedown-dockerd.log)"
  # A session of its own: the harness kills whatever a step leaves in its process group,
  # and dockerd must outlive this script.
  setsid -f /usr/sbin/dockerd </dev/null >/var/log/shakedown-dockerd.log 2>&1
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || die "failed to start dockerd: see /var/log/shakedown-dockerd.log"
fi
echo "host ready: $(docker version --format 'docker server {{.Server.Version}}'), $(go version)"
