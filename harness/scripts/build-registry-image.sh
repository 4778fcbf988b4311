#!/usr/bin/env bash
# Builds the local registry image: Debian's docker-registry (distribution 2.8) with the
# libraries ldd names, FROM scratch, listening on :5000 over plain HTTP with no auth. It runs
# as the registry mirror of the registry trials, reachable only from this machine.
#
# Inputs (environment):
#   TAG           image tag to build (required)
#   WORK          scratch folder (required)
#   REGISTRY_BIN  default /usr/bin/docker-registry (apt-get install docker-registry)
# Idempotent: an image whose inputs did not change is not imported again.
set -euo pipefail
SCRIPT_NAME="build registry image"
# shellcheck source=image-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-lib.sh"
: "${TAG:?TAG must be set}" "${WORK:?WORK must be set}"
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}
[ -x "$REGISTRY_BIN" ] || die "failed to find $REGISTRY_BIN (apt-get install docker-registry, or run shakedown host setup)"
command -v docker >/dev/null || die "failed to find docker"
work_dirs
built=()
changed=0

libs=$(ldd "$REGISTRY_BIN" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u || true)
config="$WORK/registry-config.yml"
cat >"$config" <<'YML'
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
YML
# shellcheck disable=SC2086
k=$(key "$REGISTRY_BIN" "$config" $libs)
t=$(new_tree registry)
mkdir -p "$t/usr/local/bin" "$t/etc/docker/registry" "$t/var/lib/registry"
run install -m 0755 "$REGISTRY_BIN" "$t/usr/local/bin/registry"
run install -m 0644 "$config" "$t/etc/docker/registry/config.yml"
for l in $libs; do
  mkdir -p "$t$(dirname "$l")"
  run cp -L "$l" "$t$l"
done
import_tree "$t" "$TAG" "$k" \
  --change 'ENV PATH=/usr/local/bin' \
  --change 'EXPOSE 5000' \
  --change 'ENTRYPOINT ["/usr/local/bin/registry"]' \
  --change 'CMD ["serve", "/etc/docker/registry/config.yml"]'
echo "$TAG"
