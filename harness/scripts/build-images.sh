#!/usr/bin/env bash
# Stage "images": builds the container images a shakedown cluster runs, from local
# binaries only (no registry can be reached), and saves them into one tarball that
# nodes load with `ctr -n k8s.io images import`.
#
# Images (every one labelled io.shakedown.managed=true):
#   $IMAGE_REPO/kube-apiserver:$KUBE_VERSION           FROM scratch + static binary
#   $IMAGE_REPO/kube-controller-manager:$KUBE_VERSION  FROM scratch + static binary
#   $IMAGE_REPO/kube-scheduler:$KUBE_VERSION           FROM scratch + static binary
#   $IMAGE_REPO/kube-proxy:$KUBE_VERSION               Debian rootfs (iptables, conntrack, ipset) + binary
#   $IMAGE_REPO/etcd:$ETCD_TAG                         Debian's etcd and etcdctl with their libc and ld-linux beside it
#   $IMAGE_REPO/pause:$PAUSE_TAG                       static pause from BIN_DIR
#   $IMAGE_REPO/agnhost:$AGNHOST_TAG                   static agnhost (+ busybox applets for `sh -c` specs)
#   $IMAGE_REPO/busybox:$BUSYBOX_TAG                   Debian busybox-static with applet symlinks
#
# Inputs (environment):
#   BIN_DIR        folder with kube-apiserver kube-controller-manager kube-scheduler
#                  kube-proxy pause agnhost (required)
#   KUBE_VERSION   e.g. v1.20.2 (required)
#   WORK           scratch folder (required); the kube-proxy rootfs is cached in
#                  $WORK/rootfs/kube-proxy-$DEBIAN_SUITE, image trees in $WORK/images/
#   IMAGE_REPO     image name prefix (default shakedown.local)
#   ETCD_TAG       default 3.4.23-shakedown (must start with the etcd binary's version)
#   PAUSE_TAG      default 3.4.1
#   AGNHOST_TAG    default 2.21
#   BUSYBOX_TAG    default 1.29
#   ETCD_BIN       default /usr/bin/etcd (Debian etcd-server)
#   ETCDCTL_BIN    default /usr/bin/etcdctl (Debian etcd-client)
#   BUSYBOX_BIN    default /bin/busybox (Debian busybox-static)
#   E2E_PAUSE_TAGS extra tags of the pause image that e2e.test asks for (default 3.2)
#   AGNHOST_TLS_DIR folder with localhost.crt and localhost.key for `agnhost porter` (the
#                  source tree's test/images/agnhost/porter); unset: a self-signed pair
#   DEBIAN_SUITE   default bookworm
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
# Outputs:
#   $WORK/images.txt  every tag built, one per line
#   $WORK/images.tar  `docker save` of all of them
# Idempotent: an image whose inputs did not change (label io.shakedown.input) is not
# imported again, and images.tar is not rewritten when no image changed.
set -euo pipefail
SCRIPT_NAME="build images"
# shellcheck source=image-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-lib.sh"
: "${BIN_DIR:?BIN_DIR must be set}" "${KUBE_VERSION:?KUBE_VERSION must be set}" "${WORK:?WORK must be set}"
IMAGE_REPO=${IMAGE_REPO:-shakedown.local}
ETCD_TAG=${ETCD_TAG:-3.4.23-shakedown}
PAUSE_TAG=${PAUSE_TAG:-3.4.1}
AGNHOST_TAG=${AGNHOST_TAG:-2.21}
BUSYBOX_TAG=${BUSYBOX_TAG:-1.29}
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
BUSYBOX_BIN=${BUSYBOX_BIN:-/bin/busybox}
E2E_PAUSE_TAGS=${E2E_PAUSE_TAGS:-3.2}
AGNHOST_TLS_DIR=${AGNHOST_TLS_DIR:-}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || die "failed to build images: must run as root (debootstrap needs it)"
command -v docker >/dev/null || die "failed to find docker"
command -v debootstrap >/dev/null || die "failed to find debootstrap (apt-get install debootstrap)"
for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy pause agnhost; do
  [ -x "$BIN_DIR/$b" ] || die "failed to find $BIN_DIR/$b (build the Kubernetes binaries first)"
done
[ -x "$ETCD_BIN" ] || die "failed to find $ETCD_BIN (apt-get install etcd-server)"
[ -x "$BUSYBOX_BIN" ] || die "failed to find $BUSYBOX_BIN (apt-get install busybox-static)"

work_dirs

is_static() { ! ldd "$1" >/dev/null 2>&1 || ldd "$1" 2>&1 | grep -q 'statically linked'; }
require_static() {
  is_static "$1" || die "failed to use $1: it is dynamically linked (build it with CGO_ENABLED=0 / gcc -static)"
}

# add_busybox TREE: busybox in /bin and a symlink per applet (the upstream image's layout).
add_busybox() {
  local t=$1 a
  mkdir -p "$t/bin" "$t/etc"
  install -m 0755 "$BUSYBOX_BIN" "$t/bin/busybox"
  for a in $("$BUSYBOX_BIN" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$t/bin/$a"
  done
  [ -f "$t/etc/passwd" ] || printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$t/etc/passwd"
  [ -f "$t/etc/group" ] || printf 'root:x:0:\nnogroup:x:65534:\n' >"$t/etc/group"
  mkdir -p "$t/root"
}

# --- control plane: static binaries FROM scratch --------------------------------------
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  require_static "$BIN_DIR/$c"
  k=$(key "$BIN_DIR/$c")
  tag="$IMAGE_REPO/$c:$KUBE_VERSION"
  if stale "$tag" "$k"; then
    t=$(new_tree "$c")
    mkdir -p "$t/usr/local/bin"
    run install -m 0755 "$BIN_DIR/$c" "$t/usr/local/bin/$c"
  fi
  import_tree "$trees/$c" "$tag" "$k" \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change "ENTRYPOINT [\"/usr/local/bin/$c\"]"
done

# --- pause ----------------------------------------------------------------------------
require_static "$BIN_DIR/pause"
k=$(key "$BIN_DIR/pause")
t=$(new_tree pause)
run install -m 0755 "$BIN_DIR/pause" "$t/pause"
import_tree "$t" "$IMAGE_REPO/pause:$PAUSE_TAG" "$k" \
  --change 'ENV PATH=/' \
  --change 'USER 65535:65535' \
  --change 'ENTRYPOINT ["/pause"]'
# e2e.test asks for the pause tag of its own manifest (3.2 in 1.20): the same binary.
for extra in $E2E_PAUSE_TAGS; do
  run docker tag "$IMAGE_REPO/pause:$PAUSE_TAG" "$IMAGE_REPO/pause:$extra"
  built+=("$IMAGE_REPO/pause:$extra")
done

# --- busybox --------------------------------------------------------------------------
require_static "$BUSYBOX_BIN"
k=$(key "$BUSYBOX_BIN")
t=$(new_tree busybox)
add_busybox "$t"
mkdir -p "$t/home" "$t/var" "$t/usr/bin" "$t/usr/sbin" "$t/sbin"
import_tree "$t" "$IMAGE_REPO/busybox:$BUSYBOX_TAG" "$k" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["sh"]'

# --- agnhost: upstream ships it on alpine with curl, nc, dig, ip, iperf and bash, and e2e
# specs call those (lifecycle hooks run `sh -c curl ...`): the same tools from Debian.
# `agnhost porter` serves its TLS ports with /localhost.crt and /localhost.key, which the
# upstream image adds from test/images/agnhost/porter; without them those ports never
# listen (the Proxy conformance spec proxies to them).
require_static "$BIN_DIR/agnhost"
agnhost_rootfs=$(debian_rootfs agnhost curl,netcat-openbsd,dnsutils,iproute2,iperf,ca-certificates)
tls="$WORK/agnhost-tls"
mkdir -p "$tls"
if [ -n "$AGNHOST_TLS_DIR" ] && [ -f "$AGNHOST_TLS_DIR/localhost.crt" ] && [ -f "$AGNHOST_TLS_DIR/localhost.key" ]; then
  run cp "$AGNHOST_TLS_DIR/localhost.crt" "$AGNHOST_TLS_DIR/localhost.key" "$tls/"
elif [ ! -f "$tls/localhost.crt" ]; then
  command -v openssl >/dev/null || die "failed to find openssl for agnhost's TLS cert (apt-get install openssl), or set AGNHOST_TLS_DIR"
  run openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
    -keyout "$tls/localhost.key" -out "$tls/localhost.crt" \
    || die "failed to generate agnhost's TLS cert"
fi
k=$(key "$BIN_DIR/agnhost" "$agnhost_rootfs/.shakedown-complete" "$tls/localhost.crt" "$tls/localhost.key")
tag="$IMAGE_REPO/agnhost:$AGNHOST_TAG"
if stale "$tag" "$k"; then
  tree_from_rootfs agnhost "$agnhost_rootfs" "$BIN_DIR/agnhost" /agnhost
  ln -sf agnhost "$trees/agnhost/agnhost-2"
  run install -m 0644 "$tls/localhost.crt" "$tls/localhost.key" "$trees/agnhost/"
fi
import_tree "$trees/agnhost" "$tag" "$k" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENTRYPOINT ["/agnhost"]' \
  --change 'CMD ["pause"]'

# --- etcd: Debian's dynamically linked binary + the libraries ldd names ----------------
etcd_version=$("$ETCD_BIN" --version | sed -n 's/^etcd Version: //p')
case $ETCD_TAG in
  "$etcd_version"*) ;;
  *) die "failed to tag etcd: $ETCD_BIN is version $etcd_version but ETCD_TAG is $ETCD_TAG" ;;
esac
# etcdctl beside it, as upstream's etcd image has: the HA gates run it in the etcd pod.
[ -x "$ETCDCTL_BIN" ] || die "failed to find $ETCDCTL_BIN (apt-get install etcd-client)"
libs=$(ldd "$ETCD_BIN" "$ETCDCTL_BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)
[ -n "$libs" ] || die "failed to list the libraries of $ETCD_BIN with ldd"
# shellcheck disable=SC2086
k=$(key "$ETCD_BIN" "$ETCDCTL_BIN" $libs)
t=$(new_tree etcd)
mkdir -p "$t/usr/local/bin" "$t/var/lib/etcd"
run install -m 0755 "$ETCD_BIN" "$t/usr/local/bin/etcd"
run install -m 0755 "$ETCDCTL_BIN" "$t/usr/local/bin/etcdctl"
for l in $libs; do
  # Same path as on the host (the interpreter path is baked into the binary);
  # -L turns Debian's merged-/usr symlinks into real files.
  mkdir -p "$t$(dirname "$l")"
  run cp -L "$l" "$t$l"
done
import_tree "$t" "$IMAGE_REPO/etcd:$ETCD_TAG" "$k" \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'ENTRYPOINT ["/usr/local/bin/etcd"]'
log docker run --rm --network none "$IMAGE_REPO/etcd:$ETCD_TAG" --version
docker run --rm --network none --label io.shakedown.managed=true \
  "$IMAGE_REPO/etcd:$ETCD_TAG" --version >/dev/null \
  || die "failed to run etcd from $IMAGE_REPO/etcd:$ETCD_TAG (missing library?)"

# --- kube-proxy: a small Debian rootfs for iptables, conntrack and ipset ----------------
require_static "$BIN_DIR/kube-proxy"
proxy_rootfs=$(debian_rootfs kube-proxy iptables,conntrack,ipset)
k=$(key "$BIN_DIR/kube-proxy" "$proxy_rootfs/.shakedown-complete")
tag="$IMAGE_REPO/kube-proxy:$KUBE_VERSION"
if stale "$tag" "$k"; then
  tree_from_rootfs kube-proxy "$proxy_rootfs" "$BIN_DIR/kube-proxy" /usr/local/bin/kube-proxy
fi
import_tree "$trees/kube-proxy" "$tag" "$k" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]'

# --- outputs --------------------------------------------------------------------------
save_images "$WORK" images
