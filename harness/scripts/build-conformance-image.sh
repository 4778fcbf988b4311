#!/usr/bin/env bash
# Stage "conformance image": the image sonobuoy and hydrophone run in-cluster, built here
# the way cluster/images/conformance/Dockerfile builds it upstream, for clusters that cannot
# pull registry.k8s.io/conformance:
#   /usr/local/bin/{e2e.test,ginkgo,kubectl}, /run_e2e.sh and /kubernetes/cluster from the
#   same Kubernetes source tree, the upstream environment defaults (E2E_FOCUS, E2E_SKIP,
#   E2E_PROVIDER, E2E_PARALLEL, E2E_VERBOSITY, RESULTS_DIR, KUBECONFIG) and its command.
# The base is a Debian minbase rootfs with procps (run_e2e.sh's TERM handler needs pgrep)
# instead of upstream's debian-base image.
#
# Inputs (environment):
#   E2E_DIR        folder with e2e.test and ginkgo (required)
#   KUBECTL        the kubectl to ship (required)
#   SOURCE_TREE    Kubernetes source tree with cluster/images/conformance/run_e2e.sh (required)
#   TAG            image tag to build (required)
#   WORK           scratch folder (required); the rootfs is cached in $WORK/rootfs
#   OUT_TAR        where to `docker save` the image, for loading into nodes (required)
#   DEBIAN_SUITE   default bookworm
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
# Idempotent: an image whose inputs did not change (label io.shakedown.input) is not
# imported again, and OUT_TAR is kept while it holds that image.
set -euo pipefail
SCRIPT_NAME="build conformance image"
# shellcheck source=image-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-lib.sh"
: "${E2E_DIR:?E2E_DIR must be set}" "${KUBECTL:?KUBECTL must be set}" "${SOURCE_TREE:?SOURCE_TREE must be set}"
: "${TAG:?TAG must be set}" "${WORK:?WORK must be set}" "${OUT_TAR:?OUT_TAR must be set}"
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || die "failed to build the conformance image: must run as root (debootstrap needs it)"
command -v docker >/dev/null || die "failed to find docker"
command -v debootstrap >/dev/null || die "failed to find debootstrap (apt-get install debootstrap)"
for b in "$E2E_DIR/e2e.test" "$E2E_DIR/ginkgo" "$KUBECTL"; do
  [ -x "$b" ] || die "failed to find $b"
done
runner="$SOURCE_TREE/cluster/images/conformance/run_e2e.sh"
[ -f "$runner" ] || die "failed to find $runner (the conformance image's entry script comes from the Kubernetes source tree)"

work_dirs

rootfs=$(debian_rootfs conformance procps,ca-certificates)
k=$(key "$E2E_DIR/e2e.test" "$E2E_DIR/ginkgo" "$KUBECTL" "$runner" "$rootfs/.shakedown-complete")
if stale "$TAG" "$k"; then
  tree_from_rootfs conformance "$rootfs" "$E2E_DIR/e2e.test" /usr/local/bin/e2e.test
  t="$trees/conformance"
  run install -m 0755 "$E2E_DIR/ginkgo" "$t/usr/local/bin/ginkgo"
  run install -m 0755 "$KUBECTL" "$t/usr/local/bin/kubectl"
  run install -m 0755 "$runner" "$t/run_e2e.sh"
  mkdir -p "$t/kubernetes" "$t/tmp/results"
  run cp -a "$SOURCE_TREE/cluster" "$t/kubernetes/cluster"
fi
# shellcheck disable=SC2016
import_tree "$trees/conformance" "$TAG" "$k" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV E2E_FOCUS="\[Conformance\]"' \
  --change 'ENV E2E_SKIP=' \
  --change 'ENV E2E_PROVIDER=local' \
  --change 'ENV E2E_PARALLEL=1' \
  --change 'ENV E2E_VERBOSITY=4' \
  --change 'ENV RESULTS_DIR=/tmp/results' \
  --change 'ENV KUBECONFIG=' \
  --change 'WORKDIR /usr/local/bin' \
  --change 'CMD ["/bin/bash", "-c", "/run_e2e.sh"]'

if [ "$changed" = 1 ] || [ ! -s "$OUT_TAR" ]; then
  mkdir -p "$(dirname "$OUT_TAR")"
  log docker save -o "$OUT_TAR.partial" "$TAG"
  docker save -o "$OUT_TAR.partial" "$TAG" || die "failed to save $TAG"
  mv "$OUT_TAR.partial" "$OUT_TAR"
fi
echo "built $TAG ($OUT_TAR)" >&2
