#!/usr/bin/env bash
# Stage "node image": builds the docker image every cluster node container runs.
# A Debian (debootstrap --variant=minbase) root filesystem with systemd, containerd,
# runc, the CNI plugins and the networking tools kubelet and kube-proxy need, plus
# kubeadm, kubelet and kubectl from BIN_DIR and the files in harness/assets/node/.
# No registry is used: the result is made with `docker import`.
#
# Inputs (environment):
#   BIN_DIR        folder holding kubeadm, kubelet, kubectl (required)
#   KUBE_VERSION   e.g. v1.20.2 (required)
#   IMAGE_REPO     image name prefix (default shakedown.local)
#   WORK           scratch folder; the debootstrap rootfs is cached in
#                  $WORK/rootfs/node-$DEBIAN_SUITE and reused when complete (required)
#   NODE_TAG       tag of the result (default $IMAGE_REPO/node:$KUBE_VERSION)
#   DEBIAN_SUITE   default bookworm
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
#   ASSETS_DIR     default <this script>/../assets/node
#   ONLY_ROOTFS    if 1, stop after the cached rootfs exists (prefetch; BIN_DIR unused)
#   RUNTIME        containerd (default) or docker: Debian's docker.io as well, for kubelet's
#                  dockershim (kubelet 1.6-1.23); its rootfs is cached apart
# Output: the image NODE_TAG, labelled io.shakedown.managed=true; its tag on stdout.
set -euo pipefail
: "${WORK:?WORK must be set}"
ONLY_ROOTFS=${ONLY_ROOTFS:-0}
if [ "$ONLY_ROOTFS" != 1 ]; then
  : "${BIN_DIR:?BIN_DIR must be set}" "${KUBE_VERSION:?KUBE_VERSION must be set}"
fi
KUBE_VERSION=${KUBE_VERSION:-}
RUNTIME=${RUNTIME:-containerd}
case $RUNTIME in containerd | docker) ;; *) echo "build node image: RUNTIME must be containerd or docker, not $RUNTIME" >&2; exit 1 ;; esac
IMAGE_REPO=${IMAGE_REPO:-shakedown.local}
NODE_TAG=${NODE_TAG:-$IMAGE_REPO/node:$KUBE_VERSION}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ASSETS_DIR=${ASSETS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../assets/node" && pwd)}

log() { printf '+ %s\n' "$*" >&2; }
run() { log "$@"; "$@"; }
die() { printf 'build node image: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "failed to build node image: must run as root (debootstrap needs it)"
if [ "$ONLY_ROOTFS" != 1 ]; then
  for b in kubeadm kubelet kubectl; do
    [ -x "$BIN_DIR/$b" ] || die "failed to find $BIN_DIR/$b (build the Kubernetes binaries first)"
  done
fi
[ -x "$ASSETS_DIR/usr/local/bin/shakedown-entrypoint" ] || die "failed to find node assets in $ASSETS_DIR"
command -v debootstrap >/dev/null || die "failed to find debootstrap (apt-get install debootstrap)"
command -v rsync >/dev/null || die "failed to find rsync (apt-get install rsync)"

# Packages measured as needed in ../../shared/ENVIRONMENT.md.
packages=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,iproute2,conntrack,ethtool,socat,ebtables,kmod,util-linux,mount,ca-certificates,procps,libseccomp2
rootfs_name="node-$DEBIAN_SUITE"
if [ "$RUNTIME" = docker ]; then
  packages="$packages,docker.io"
  rootfs_name="node-$DEBIAN_SUITE-docker"
fi

mkdir -p "$WORK/rootfs" "$WORK/debootstrap-cache"
WORK=$(cd "$WORK" && pwd)  # debootstrap --cache-dir needs an absolute path
rootfs="$WORK/rootfs/$rootfs_name"
# The cache key includes the package list: a changed list rebuilds the rootfs.
stamp="$DEBIAN_SUITE $packages"
if [ -f "$rootfs/.shakedown-complete" ] && [ "$(cat "$rootfs/.shakedown-complete")" = "$stamp" ]; then
  echo "reusing rootfs $rootfs" >&2
else
  partial="$rootfs.partial"
  run rm -rf "$partial" "$rootfs"
  log debootstrap --variant=minbase --cache-dir="$WORK/debootstrap-cache" --include="$packages" "$DEBIAN_SUITE" "$partial" "$DEBIAN_MIRROR"
  debootstrap --variant=minbase --cache-dir="$WORK/debootstrap-cache" --include="$packages" "$DEBIAN_SUITE" "$partial" "$DEBIAN_MIRROR" \
    >"$WORK/rootfs/node-debootstrap.log" 2>&1 \
    || die "failed to debootstrap the node rootfs (log: $WORK/rootfs/node-debootstrap.log)"
  # Shrink: package caches and lists are not needed in the image.
  log rm -rf "$partial/var/cache/apt/archives/*.deb" "$partial/var/lib/apt/lists/*"
  rm -rf "$partial/var/cache/apt/archives/"*.deb "$partial/var/lib/apt/lists/"*
  printf '%s\n' "$stamp" >"$partial/.shakedown-complete"
  run mv "$partial" "$rootfs"
fi

[ "$ONLY_ROOTFS" = 1 ] && { echo "rootfs ready: $rootfs" >&2; exit 0; }

# Skip the rest when NODE_TAG was built from the same inputs (label io.shakedown.input).
key=$( { cat "$BIN_DIR/kubeadm" "$BIN_DIR/kubelet" "$BIN_DIR/kubectl" "$rootfs/.shakedown-complete" "${BASH_SOURCE[0]}"
         echo "$KUBE_VERSION $RUNTIME"
         (cd "$ASSETS_DIR" && find . -type f | LC_ALL=C sort | xargs -d '\n' sha256sum)
       } | sha256sum | cut -c1-16)
have=$(docker image inspect --format '{{ index .Config.Labels "io.shakedown.input" }}' "$NODE_TAG" 2>/dev/null || true)
if [ "$have" = "$key" ]; then
  echo "up to date: $NODE_TAG" >&2
  echo "$NODE_TAG"
  exit 0
fi

# Stage a copy so the cached rootfs stays pristine (it does not depend on KUBE_VERSION).
stage="$WORK/node-stage"
mkdir -p "$stage"
run rsync -a --delete --exclude=/.shakedown-complete "$rootfs/" "$stage/" \
  || die "failed to copy the rootfs into $stage"

for b in kubeadm kubelet kubectl; do
  run install -m 0755 "$BIN_DIR/$b" "$stage/usr/bin/$b"
done
run cp -a "$ASSETS_DIR/." "$stage/" || die "failed to copy node assets from $ASSETS_DIR"
run chmod 0755 "$stage/usr/local/bin/shakedown-entrypoint" "$stage/usr/local/bin/crictl"

# systemd in a container: units that need a real console, udev or a writable /
# at boot fail or hang, so mask them (measured: 252 then reaches "running").
log systemctl --root="$stage" mask getty.target ... systemd-remount-fs.service
out=$(systemctl --root="$stage" mask \
  getty.target console-getty.service getty@tty1.service serial-getty@ttyS0.service \
  systemd-logind.service \
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  systemd-udev-trigger.service systemd-udev-settle.service \
  systemd-remount-fs.service 2>&1) || die "failed to mask units in the node rootfs: $out"
units="containerd.service kubelet.service"
if [ "$RUNTIME" = docker ]; then
  # dockershim: kubelet talks to dockerd, which keeps its own image store. Pods get their
  # network from CNI, so dockerd's bridge, iptables rules and masquerading stay off.
  units="$units docker.service"
  mkdir -p "$stage/etc/docker"
  # Two things containerd's CRI does that dockerd does not, on a machine whose bounding set
  # lacks CAP_SYS_RESOURCE: nothing may lower oom_score_adj (dockershim asks -998 of every
  # sandbox; containerd has restrict_oom_score_adj), and a privileged container gets only
  # the capabilities the runtime itself holds (dockerd asks for all of them: "unable to apply
  # caps"). So dockerd's runtime is a wrapper that fixes both in the bundle, then runs runc.
  cat >"$stage/usr/local/bin/shakedown-runc" <<'SH'
#!/bin/sh
bundle=
prev=
for a in "$@"; do
  case $prev in --bundle | -b) bundle=$a ;; esac
  case $a in --bundle=*) bundle=${a#--bundle=} ;; esac
  prev=$a
done
cfg=$bundle/config.json
if [ -n "$bundle" ] && [ -f "$cfg" ]; then
  sed -i 's/"oomScoreAdj":-[0-9]*/"oomScoreAdj":0/' "$cfg"
  bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
  n=0
  for c in CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP \
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER \
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE \
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP \
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF \
    CHECKPOINT_RESTORE; do
    if [ $(( (0x$bnd >> n) & 1 )) = 0 ]; then
      sed -i "s/\"CAP_$c\",//g; s/,\"CAP_$c\"//g; s/\"CAP_$c\"//g" "$cfg"
    fi
    n=$((n + 1))
  done
fi
exec /usr/sbin/runc "$@"
SH
  chmod 0755 "$stage/usr/local/bin/shakedown-runc"
  cat >"$stage/etc/docker/daemon.json" <<'JSON'
{
  "runtimes": {"shakedown-runc": {"path": "/usr/local/bin/shakedown-runc"}},
  "default-runtime": "shakedown-runc",
  "oom-score-adjust": 0,
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "bridge": "none",
  "iptables": false,
  "ip-masq": false,
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "50m"}
}
JSON
fi
log systemctl --root="$stage" enable $units
# shellcheck disable=SC2086
out=$(systemctl --root="$stage" enable $units 2>&1) \
  || die "failed to enable $units in the node rootfs: $out"
# Every node must get its own machine-id at boot (systemd fills an empty file);
# kubelet reports it and duplicates confuse node identity.
run truncate -s 0 "$stage/etc/machine-id"
run rm -f "$stage/var/lib/dbus/machine-id"
# kubelet and CNI expect these to exist.
run mkdir -p "$stage/etc/cni/net.d" "$stage/etc/kubernetes/manifests" "$stage/var/lib/kubelet"
echo "$KUBE_VERSION" >"$stage/etc/shakedown-kube-version"

old=$(docker image inspect --format '{{.Id}}' "$NODE_TAG" 2>/dev/null || true)
# docker import cannot set STOPSIGNAL: node containers must be run with --stop-signal SIGRTMIN+3.
log "tar -C $stage -c . | docker import --change ... - $NODE_TAG"
tar -C "$stage" --numeric-owner -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/shakedown-entrypoint"]' \
  --change 'ENV container=docker' \
  --change 'LABEL io.shakedown.managed=true' \
  --change "LABEL io.shakedown.kube-version=$KUBE_VERSION" \
  --change "LABEL io.shakedown.runtime=$RUNTIME" \
  --change "LABEL io.shakedown.input=$key" \
  - "$NODE_TAG" >/dev/null || die "failed to docker import $NODE_TAG"
# The previous build is now untagged: drop it unless a node container still uses it.
if [ -n "$old" ] && [ "$(docker image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "$NODE_TAG"
