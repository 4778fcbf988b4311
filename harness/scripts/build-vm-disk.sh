#!/usr/bin/env bash
# Stage "vm disk": what a VM node boots, for the vm provider. Two parts, cached apart:
# - STAGE=kernel: Debian's cloud kernel (KERNEL_PACKAGE, resolved to its linux-image-*
#   package) unpacked with dpkg -x, its modules, and an initramfs: busybox (busybox-static),
#   the virtio modules assets/vm/initramfs/modules names (with what they need, from a
#   modules.dep made by busybox depmod), and assets/vm/initramfs/init. Into KERNEL_OUT:
#   vmlinuz, initrd.img, kernel-version, lib/modules/<version>/.
# - STAGE=disk: the node image's root filesystem (docker export), plus the kernel's modules,
#   dropbear (the provider's command channel) and assets/vm/rootfs, as an ext4 image made by
#   `mkfs.ext4 -d`: OUT/disk.raw. Each VM boots a qcow2 overlay of it, never the image.
#
# Inputs (environment):
#   STAGE           kernel or disk (required)
#   KERNEL_OUT      the kernel stage's folder (required for both)
#   WORK            scratch folder (required)
#   KERNEL_PACKAGE  default linux-image-cloud-amd64 (kernel)
#   NODE_IMAGE      the docker node image (disk)
#   OUT             folder for disk.raw (disk)
#   IMAGES_TAR      a `docker save` tarball preloaded into the disk's containerd (disk,
#                   optional): a containerd on this machine, rooted in the staged
#                   /var/lib/containerd, imports and unpacks it at native speed; an
#                   emulated VM would take minutes for the same
#   EXTRA_MB        free space on the disk beyond the root filesystem, default 6144 (disk)
#   ASSETS_DIR      default <this script>/../assets/vm
set -euo pipefail
: "${STAGE:?STAGE must be set}" "${KERNEL_OUT:?KERNEL_OUT must be set}" "${WORK:?WORK must be set}"
KERNEL_PACKAGE=${KERNEL_PACKAGE:-linux-image-cloud-amd64}
EXTRA_MB=${EXTRA_MB:-6144}
ASSETS_DIR=${ASSETS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../assets/vm" && pwd)}

log() { printf '+ %s\n' "$*" >&2; }
run() { log "$@"; "$@"; }
die() { printf 'build vm disk: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "failed to build the vm $STAGE: must run as root (files keep their owners)"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
debs="$WORK/debs"
mkdir -p "$debs"

kernel_stage() {
  for t in dpkg apt-get apt-cache busybox gzip; do
    command -v "$t" >/dev/null || die "failed to find $t (run: shakedown host setup)"
  done
  case $(busybox cpio --help 2>&1 || true) in *"-o"*) ;; *) die "failed to find busybox's cpio -o (install busybox-static)" ;; esac
  # The metapackage names one linux-image-<version> package: that is the kernel.
  local kpkg kver out ird mods dep
  kpkg=$(apt-cache depends "$KERNEL_PACKAGE" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1)
  [ -n "$kpkg" ] || die "failed to resolve $KERNEL_PACKAGE to a linux-image package (run: shakedown host setup)"
  kver=${kpkg#linux-image-}
  (cd "$debs" && run apt-get download -q "$kpkg" >&2) || die "failed to download $kpkg from Debian's archive"
  out="$KERNEL_OUT.partial"
  rm -rf "$out"
  mkdir -p "$out"
  run dpkg -x "$(ls "$debs/$kpkg"_*.deb | head -n 1)" "$out/pkg"
  [ -f "$out/pkg/boot/vmlinuz-$kver" ] || die "failed to find vmlinuz-$kver in $kpkg"
  mkdir -p "$out/lib/modules"
  mv "$out/pkg/lib/modules/$kver" "$out/lib/modules/$kver"
  mv "$out/pkg/boot/vmlinuz-$kver" "$out/vmlinuz"
  rm -rf "$out/pkg"
  mods="$out/lib/modules/$kver"
  run busybox depmod -b "$out" "$kver" || die "failed to index the modules of $kpkg"
  dep="$mods/modules.dep"

  ird="$WORK/initramfs"
  rm -rf "$ird"
  mkdir -p "$ird/bin" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/newroot" "$ird/modules"
  run cp "$(command -v busybox)" "$ird/bin/busybox"
  ln -s busybox "$ird/bin/sh"
  run install -m 0755 "$ASSETS_DIR/initramfs/init" "$ird/init"
  : >"$ird/modules.order"
  : >"$ird/loaded"
  # Each wanted module after what it needs, however modules.dep orders a line.
  add_module() {
    local line path d
    line=$(grep -E "(^|/)$1\\.ko:" "$dep" | head -n 1) || die "failed to find module $1 in $kpkg"
    path=${line%%:*}
    for d in ${line#*:}; do
      d=$(basename "$d" .ko)
      grep -qx "$d" "$ird/loaded" || add_module "$d"
    done
    grep -qx "$1" "$ird/loaded" && return 0
    echo "$1" >>"$ird/loaded"
    mkdir -p "$ird/modules/$(dirname "$path")"
    cp "$mods/$path" "$ird/modules/$path"
    echo "${path%.ko}" >>"$ird/modules.order"
  }
  while read -r m; do
    case $m in '' | '#'*) continue ;; esac
    add_module "$m"
  done <"$ASSETS_DIR/initramfs/modules"
  rm "$ird/loaded"
  log "busybox cpio -o -H newc | gzip > $out/initrd.img"
  (cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$out/initrd.img") \
    || die "failed to pack the initramfs"
  [ "$(gzip -dc "$out/initrd.img" | wc -c)" -gt 100000 ] || die "failed to pack the initramfs: it came out empty"
  rm -rf "$ird"
  echo "$kver" >"$out/kernel-version"
  rm -rf "$KERNEL_OUT"
  mv "$out" "$KERNEL_OUT"
  echo "vm kernel ready: $KERNEL_OUT ($kver)" >&2
}

disk_stage() {
  : "${NODE_IMAGE:?NODE_IMAGE must be set}" "${OUT:?OUT must be set}"
  for t in dpkg apt-get mkfs.ext4 docker systemctl; do
    command -v "$t" >/dev/null || die "failed to find $t (run: shakedown host setup)"
  done
  local kver stage cid out used_mb size_mb
  kver=$(cat "$KERNEL_OUT/kernel-version") || die "failed to read $KERNEL_OUT/kernel-version (build the kernel stage first)"
  (cd "$debs" && run apt-get download -q dropbear-bin libtomcrypt1 libtommath1 >&2) \
    || die "failed to download dropbear from Debian's archive"
  stage="$WORK/rootfs"
  rm -rf "$stage"
  mkdir -p "$stage"
  cid=$(docker create --label io.shakedown.managed=true "$NODE_IMAGE" /bin/true) \
    || die "failed to create a container of $NODE_IMAGE"
  log "docker export $cid | tar -x -C $stage"
  docker export "$cid" | tar --numeric-owner -x -C "$stage" \
    || { docker rm -f "$cid" >/dev/null; die "failed to export $NODE_IMAGE"; }
  docker rm -f "$cid" >/dev/null
  mkdir -p "$stage/lib/modules"
  run cp -a "$KERNEL_OUT/lib/modules/$kver" "$stage/lib/modules/"
  # The node's own depmod (kmod's format, which its modprobe reads).
  run chroot "$stage" depmod -a "$kver" || die "failed to run depmod in the node root filesystem"
  for d in "$debs"/dropbear-bin_*.deb "$debs"/libtomcrypt1_*.deb "$debs"/libtommath1_*.deb; do
    run dpkg -x "$d" "$stage"
  done
  run cp -a "$ASSETS_DIR/rootfs/." "$stage/"
  out=$(systemctl --root="$stage" enable shakedown-dropbear.service 2>&1) \
    || die "failed to enable dropbear in the node root filesystem: $out"
  if [ -n "${IMAGES_TAR:-}" ]; then
    preload_images "$stage"
  fi
  # The initramfs mounts / read-write; nothing else is mounted from fstab.
  : >"$stage/etc/fstab"
  echo "$kver" >"$stage/etc/shakedown-kernel"
  used_mb=$(du -sm "$stage" | cut -f1)
  size_mb=$((used_mb + EXTRA_MB))
  mkdir -p "$OUT"
  rm -f "$OUT/disk.raw.partial"
  run mkfs.ext4 -q -F -L shakedown-root -d "$stage" "$OUT/disk.raw.partial" "${size_mb}M" \
    || die "failed to make the ext4 disk image"
  mv "$OUT/disk.raw.partial" "$OUT/disk.raw"
  rm -rf "$stage"
  echo "vm disk ready: $OUT/disk.raw (kernel $kver, ${size_mb} MiB)" >&2
}

# Imports IMAGES_TAR into the staged node's containerd store (namespace k8s.io, overlayfs
# snapshots), with a containerd of this machine that serves only that root.
preload_images() {
  local stage=$1 state sock cfg pid ok=0
  command -v containerd >/dev/null && command -v ctr >/dev/null \
    || die "failed to find containerd and ctr on this machine (docker.io brings them)"
  state="$WORK/preload-state"
  sock="$state/containerd.sock"
  cfg="$state/config.toml"
  rm -rf "$state"
  mkdir -p "$state" "$stage/var/lib/containerd"
  printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$cfg"
  log "containerd --root $stage/var/lib/containerd --address $sock &"
  containerd --config "$cfg" --root "$stage/var/lib/containerd" --state "$state/run" \
    --address "$sock" >"$state/containerd.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    ctr --address "$sock" version >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.1
  done
  if [ "$ok" = 1 ]; then
    log "ctr -n k8s.io images import --snapshotter overlayfs $IMAGES_TAR"
    ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs "$IMAGES_TAR" >&2 || ok=0
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$ok" = 1 ] || die "failed to preload $IMAGES_TAR into the node's containerd (log: $state/containerd.log)"
  rm -rf "$state"
}

case $STAGE in
  kernel) kernel_stage ;;
  disk) disk_stage ;;
  *) die "STAGE must be kernel or disk, not $STAGE" ;;
esac
