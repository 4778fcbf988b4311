#!/usr/bin/env bash
# Prepares a Debian bookworm host for real shakedown clusters: installs the Debian
# packages the docker node provider and the Kubernetes source build need, enables
# deb-src so `apt-get source kubernetes` works, and starts dockerd when nothing answers.
# Idempotent: a second run only checks. Needs root. Run by `shakedown host setup`.
set -euo pipefail

log() { printf '+ %s\n' "$*" >&2; }
die() { printf 'host setup: %s\n' "$*" >&2; exit 1; }
# apt-get, waiting up to 10 minutes while another apt (a second shakedown run,
# unattended-upgrades) holds its locks instead of failing at once.
apt_wait() {
  local out
  for _ in $(seq 1 60); do
    if out=$(apt-get -o DPkg::Lock::Timeout=5 "$@" 2>&1); then
      return 0
    fi
    case "$out" in
      *"Could not get lock"*) log "apt is busy (another apt holds its lock); waiting"; sleep 5 ;;
      *) printf '%s\n' "$out" >&2; return 1 ;;
    esac
  done
  die "failed to run apt-get $*: its lock stayed held for 10 minutes"
}

[ "$(id -u)" = 0 ] || die "failed to prepare host: must run as root (apt-get and dockerd need it)"
command -v apt-get >/dev/null || die "failed to prepare host: apt-get not found (a Debian host is required)"

packages=(
  docker.io            # the engine the node containers run on
  podman               # the second node provider (netavark networks)
  golang-go            # builds Kubernetes from Debian's source package
  dpkg-dev             # apt-get source
  debootstrap          # node and kube-proxy root filesystems
  busybox-static       # test workload image
  etcd-server          # etcd image
  etcd-client          # etcdctl in the etcd image: HA gates ask etcd for its members and health
  haproxy              # the load balancer in front of several control planes
  docker-registry      # the local registry mirror (distribution 2.8) of the registry trials
  qemu-system-x86      # VM nodes (provider vm)
  qemu-utils           # qemu-img: each VM node's copy-on-write overlay disk
  openssh-client       # ssh and ssh-keygen: how commands reach VM nodes
  chromium             # the report test renders report.html in a real browser, headless
  postgresql           # the shared run-history backend, tested on 127.0.0.1
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
  # Another apt (a second shakedown run, unattended-upgrades) may hold the lock: wait for it.
  apt_wait update -qq
  touch /var/lib/apt/lists/.shakedown-updated
fi
if [ ${#missing[@]} -gt 0 ]; then
  log apt-get install -y --no-install-recommends "${missing[@]}"
  DEBIAN_FRONTEND=noninteractive apt_wait install -y -qq --no-install-recommends "${missing[@]}"
fi

# qemu-img must match qemu-system-x86: installing Debian's qemu-system-x86 removes a newer
# qemu-utils that came from elsewhere (measured: a preinstalled 10.0 backport went), so put
# back the one of the same version, a downgrade if need be.
if ! command -v qemu-img >/dev/null; then
  qv=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
  [ -n "$qv" ] || die "failed to find qemu-system-x86's version after installing it"
  log apt-get install -y --allow-downgrades "qemu-utils=$qv"
  DEBIAN_FRONTEND=noninteractive apt_wait install -y -qq --no-install-recommends --allow-downgrades "qemu-utils=$qv"
fi

# dockerd: start it when no daemon answers, and only then. Never a second daemon beside a
# running one, never for a DOCKER_HOST that points elsewhere, never truncating a log.
default_host=unix:///var/run/docker.sock
target=${DOCKER_HOST:-$default_host}
# A daemon that accepts connections and never answers must not hold this script: bound it.
if ! timeout 20 docker info >/dev/null 2>&1; then
  if [ "$target" != "$default_host" ]; then
    die "failed to reach the docker daemon at DOCKER_HOST=$target: it does not answer, and host setup starts a daemon only at $default_host (unset DOCKER_HOST, or start the daemon it names)"
  fi
  if pid=$(pgrep -x dockerd | head -n 1) && [ -n "$pid" ]; then
    die "failed to reach the docker daemon at $target: dockerd (pid $pid) is running but does not answer; host setup will not start a second one (see /var/log/shakedown-dockerd.log)"
  fi
  log "setsid -f dockerd (log appended to /var/log/shakedown-dockerd.log)"
  # A session of its own: the harness kills whatever a step leaves in its process group,
  # and dockerd must outlive this script.
  setsid -f /usr/sbin/dockerd </dev/null >>/var/log/shakedown-dockerd.log 2>&1
  for _ in $(seq 1 60); do
    timeout 10 docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  timeout 10 docker info >/dev/null 2>&1 || die "failed to start dockerd at $target: see /var/log/shakedown-dockerd.log"
fi
# PostgreSQL on loopback: the shared run-history backend's tests record into it. Debian's own
# cluster (created when there is none) listens on localhost only, as Debian configures it.
# Started in a session of its own, like dockerd, so that it outlives this script.
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
  pgver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  log "pg_createcluster $pgver main"
  pg_createcluster "$pgver" main >/dev/null
fi
read -r pgver pgname pgport pgstatus _ < <(pg_lsclusters -h | head -n 1)
if [ "$pgstatus" != online ]; then
  log "setsid -f pg_ctlcluster $pgver $pgname start"
  setsid -f pg_ctlcluster "$pgver" "$pgname" start </dev/null >>/var/log/shakedown-postgresql.log 2>&1
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$pgport" && break
    sleep 0.5
  done
  pg_isready -q -h 127.0.0.1 -p "$pgport" || die "failed to start PostgreSQL $pgver/$pgname on 127.0.0.1:$pgport: see /var/log/shakedown-postgresql.log and /var/log/postgresql/"
fi
# The tests' role may create (and drop) a database per test; it owns nothing else.
runuser -u postgres -- psql -p "$pgport" -v ON_ERROR_STOP=1 -qc "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shakedown_test') THEN CREATE ROLE shakedown_test LOGIN CREATEDB PASSWORD 'shakedown_test'; END IF; END\$\$" >/dev/null \
  || die "failed to create the PostgreSQL role shakedown_test on port $pgport"
echo "postgres ready: postgres://shakedown_test@127.0.0.1:$pgport/postgres (the history backend's tests)"

echo "host ready: $(docker version --format 'docker server {{.Server.Version}}'), $(go version)"
