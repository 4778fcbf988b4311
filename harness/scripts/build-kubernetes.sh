#!/usr/bin/env bash
# Stage "binaries": builds Kubernetes from Debian's source package.
# Inputs (environment):
#   DEB_VERSION   Debian source version, e.g. 1.20.5+really1.20.2
#   KUBE_VERSION  version stamped into the binaries, e.g. v1.20.2
#   SRC_CACHE     where unpacked source trees are kept (keyed by DEB_VERSION)
#   OUT           output folder; bin/ is filled with the built binaries
# The fixes applied are the ones ../shared/ENVIRONMENT.md measured as necessary.
set -euo pipefail
: "${DEB_VERSION:?}" "${KUBE_VERSION:?}" "${SRC_CACHE:?}" "${OUT:?}"
log() { printf '+ %s\n' "$*" >&2; }

mkdir -p "$SRC_CACHE" "$OUT/bin"
tree="$SRC_CACHE/kubernetes-$DEB_VERSION"
upstream="${DEB_VERSION%%-*}"
if [ ! -f "$tree/.shakedown-unpacked" ]; then
  rm -rf "$tree" "$SRC_CACHE/dl-$DEB_VERSION"
  mkdir -p "$SRC_CACHE/dl-$DEB_VERSION"
  ( cd "$SRC_CACHE/dl-$DEB_VERSION"
    log apt-get source "kubernetes=$DEB_VERSION"
    apt-get source -qq "kubernetes=$DEB_VERSION" >/dev/null )
  dir=$(find "$SRC_CACHE/dl-$DEB_VERSION" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [ -n "$dir" ] || { echo "failed to unpack kubernetes=$DEB_VERSION: no source tree" >&2; exit 1; }
  mv "$dir" "$tree"
  rm -rf "$SRC_CACHE/dl-$DEB_VERSION"
  touch "$tree/.shakedown-unpacked"
fi
echo "source tree: $tree (upstream $upstream)"

# reflect2 1.0.1 and json-iterator as vendored panic under Go >= 1.18: use Debian's.
replace_vendor() {
  local pkg=$1
  local from=/usr/share/gocode/src/$pkg
  [ -d "$from" ] || { echo "failed to fix vendor/$pkg: $from missing (install the Debian -dev package)" >&2; exit 1; }
  log "replace vendor/$pkg with $from"
  rm -rf "$tree/vendor/$pkg"
  mkdir -p "$tree/vendor/$pkg"
  cp -r "$from/." "$tree/vendor/$pkg/"
  find "$tree/vendor/$pkg" \( -name go.mod -o -name go.sum -o -name '*_test.go' \) -delete
}
replace_vendor github.com/modern-go/reflect2
replace_vendor github.com/json-iterator/go

export GOPATH="$SRC_CACHE/gopath"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$tree" "$GOPATH/src/k8s.io/kubernetes"
export GO111MODULE=off GOFLAGS= GOCACHE="${GOCACHE:-$SRC_CACHE/gocache}"
cd "$GOPATH/src/k8s.io/kubernetes"
# make expects _output/bin to be a symlink it creates itself.
if [ -d _output/bin ] && [ ! -L _output/bin ]; then rm -rf _output/bin; fi

# The tree is a `git archive`: hack/lib/version.sh takes the version from the archive's
# tag and ignores KUBE_GIT_VERSION. A version file is the documented way to stamp another
# (a second build of the same tree under another version string, for upgrade trials).
commit=$(sed -n "s/^ *KUBE_GIT_COMMIT='\([0-9a-f]*\)'.*/\1/p" hack/lib/version.sh | head -n1)
ver=${KUBE_VERSION#v}
export KUBE_GIT_VERSION_FILE="$OUT/version.env"
cat > "$KUBE_GIT_VERSION_FILE" <<VERSION
KUBE_GIT_COMMIT='$commit'
KUBE_GIT_TREE_STATE='archive'
KUBE_GIT_VERSION='$KUBE_VERSION'
KUBE_GIT_MAJOR='${ver%%.*}'
KUBE_GIT_MINOR='$(echo "$ver" | cut -d. -f2)'
VERSION
log "version file $KUBE_GIT_VERSION_FILE: $(tr '\n' ' ' < "$KUBE_GIT_VERSION_FILE")"

what="cmd/kubeadm cmd/kubelet cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kube-proxy cmd/kubectl test/e2e/e2e.test vendor/github.com/onsi/ginkgo/ginkgo"
log make WHAT="$what" KUBE_GIT_VERSION="$KUBE_VERSION"
make WHAT="$what" KUBE_GIT_VERSION="$KUBE_VERSION" KUBE_BUILD_PLATFORMS=linux/amd64

for b in kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl e2e.test ginkgo; do
  install -m 0755 "_output/bin/$b" "$OUT/bin/$b"
done

log "go build test/images/agnhost"
( cd test/images/agnhost && CGO_ENABLED=0 go build -o "$OUT/bin/agnhost" . )
log "gcc -static build/pause/linux/pause.c"
gcc -Os -static -o "$OUT/bin/pause" build/pause/linux/pause.c -DVERSION=3.4.1-shakedown
got=$("$OUT/bin/kubeadm" version -o short)
echo "$got"
[ "$got" = "$KUBE_VERSION" ] || { echo "failed to stamp $KUBE_VERSION: kubeadm says $got" >&2; exit 1; }
