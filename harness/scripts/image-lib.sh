# Helpers shared by the image build scripts (sourced, not run). The caller sets WORK,
# DEBIAN_SUITE, DEBIAN_MIRROR and SCRIPT_NAME (used in error messages), then calls
# work_dirs before anything else here.

log() { printf '+ %s\n' "$*" >&2; }
run() { log "$@"; "$@"; }
die() { printf '%s: %s\n' "${SCRIPT_NAME:-build}" "$*" >&2; exit 1; }

# work_dirs: absolute WORK (debootstrap --cache-dir needs one) and the image-tree folder.
work_dirs() {
  WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
  trees="$WORK/images"
  mkdir -p "$trees" "$WORK/rootfs" "$WORK/debootstrap-cache"
}

# new_tree NAME: an empty image tree with /tmp, printed.
new_tree() {
  local t="$trees/$1"
  rm -rf "$t"
  mkdir -p "$t/tmp"
  chmod 1777 "$t/tmp"
  printf '%s\n' "$t"
}

built=()
changed=0
# import_tree TREE TAG INPUT-KEY [--change ...]: docker import TREE as TAG unless an
# image with the same input key is already tagged TAG.
import_tree() {
  local tree=$1 tag=$2 key=$3
  shift 3
  built+=("$tag")
  local have
  have=$(docker image inspect --format '{{ index .Config.Labels "io.shakedown.input" }}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$key" ]; then
    echo "up to date: $tag" >&2
    return 0
  fi
  local old
  old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  log "tar -C $tree -c . | docker import $* - $tag"
  tar -C "$tree" --numeric-owner -c . | docker import "$@" \
    --change 'LABEL io.shakedown.managed=true' \
    --change "LABEL io.shakedown.input=$key" \
    - "$tag" >/dev/null || die "failed to docker import $tag"
  changed=1
  # The previous build of this tag is now untagged: drop it unless something still uses it.
  if [ -n "$old" ] && [ "$(docker image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# key FILES...: a short digest of the given files, the calling script and this library.
key() { cat "$@" "$0" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16; }

# stale TAG KEY: true when TAG is missing or was built from other inputs.
stale() {
  [ "$(docker image inspect --format '{{ index .Config.Labels "io.shakedown.input" }}' "$1" 2>/dev/null || true)" != "$2" ]
}

# tree_from_rootfs NAME ROOTFS BINARY DEST: the image tree NAME is ROOTFS plus BINARY at DEST.
tree_from_rootfs() {
  local t="$trees/$1"
  mkdir -p "$t"
  run rsync -a --delete --exclude=/.shakedown-complete "$2/" "$t/" || die "failed to copy the $1 rootfs into $t"
  run install -m 0755 "$3" "$t$4"
}

# debian_rootfs NAME PACKAGES: a debootstrap minbase rootfs with PACKAGES (comma list),
# cached in $WORK/rootfs/NAME-$DEBIAN_SUITE and reused while the package list is the same.
# Prints its path.
debian_rootfs() {
  local name=$1 packages=$2
  local rootfs="$WORK/rootfs/$name-$DEBIAN_SUITE"
  local stamp="$DEBIAN_SUITE $packages"
  if [ -f "$rootfs/.shakedown-complete" ] && [ "$(cat "$rootfs/.shakedown-complete")" = "$stamp" ]; then
    echo "reusing rootfs $rootfs" >&2
  else
    local partial="$rootfs.partial"
    run rm -rf "$partial" "$rootfs" >&2
    log debootstrap --variant=minbase --cache-dir="$WORK/debootstrap-cache" --include="$packages" "$DEBIAN_SUITE" "$partial" "$DEBIAN_MIRROR"
    debootstrap --variant=minbase --cache-dir="$WORK/debootstrap-cache" --include="$packages" \
      "$DEBIAN_SUITE" "$partial" "$DEBIAN_MIRROR" >"$WORK/rootfs/$name-debootstrap.log" 2>&1 \
      || die "failed to debootstrap the $name rootfs (log: $WORK/rootfs/$name-debootstrap.log)"
    # Not needed at run time; keeps the image small.
    log rm -rf "$partial/var/cache/apt/archives/*.deb" "$partial/var/lib/apt/lists/*" "$partial/usr/share/{doc,man,info,locale}"
    rm -rf "$partial/var/cache/apt/archives/"*.deb "$partial/var/lib/apt/lists/"* \
      "$partial/usr/share/doc" "$partial/usr/share/man" "$partial/usr/share/info" "$partial/usr/share/locale"
    printf '%s\n' "$stamp" >"$partial/.shakedown-complete"
    run mv "$partial" "$rootfs" >&2
  fi
  printf '%s\n' "$rootfs"
}

# save_images DIR NAME: DIR/NAME.txt lists every tag in $built, and DIR/NAME.tar is their
# `docker save`, rewritten only when an image changed (ids kept in DIR/NAME.ids).
save_images() {
  local dir=$1 name=$2 ids
  printf '%s\n' "${built[@]}" >"$dir/$name.txt.partial"
  ids=$(for t in "${built[@]}"; do docker image inspect --format "{{.Id}} $t" "$t"; done)
  if [ "$changed" = 0 ] && [ -f "$dir/$name.tar" ] && [ -f "$dir/$name.ids" ] \
    && [ "$(cat "$dir/$name.ids")" = "$ids" ]; then
    echo "up to date: $dir/$name.tar" >&2
  else
    run docker save -o "$dir/$name.tar.partial" "${built[@]}" || die "failed to docker save the images into $dir/$name.tar"
    run chmod 0644 "$dir/$name.tar.partial"
    run mv "$dir/$name.tar.partial" "$dir/$name.tar"
    printf '%s\n' "$ids" >"$dir/$name.ids"
  fi
  mv "$dir/$name.txt.partial" "$dir/$name.txt"
  cat "$dir/$name.txt"
}
