#!/usr/bin/env bash
# Builds the load-balancer image of HA clusters: Debian's haproxy with the libraries ldd
# names, FROM scratch. The provider copies in /usr/local/etc/haproxy/haproxy.cfg (the
# control planes' addresses) before it starts the container.
#
# Inputs (environment):
#   TAG          image tag to build (required)
#   WORK         scratch folder (required)
#   HAPROXY_BIN  default /usr/sbin/haproxy (apt-get install haproxy)
# Idempotent: an image whose inputs did not change is not imported again.
set -euo pipefail
SCRIPT_NAME="build load-balancer image"
# shellcheck source=image-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-lib.sh"
: "${TAG:?TAG must be set}" "${WORK:?WORK must be set}"
HAPROXY_BIN=${HAPROXY_BIN:-/usr/sbin/haproxy}
[ -x "$HAPROXY_BIN" ] || die "failed to find $HAPROXY_BIN (apt-get install haproxy, or run shakedown host setup)"
command -v docker >/dev/null || die "failed to find docker"
work_dirs

libs=$(ldd "$HAPROXY_BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || die "failed to list the libraries of $HAPROXY_BIN with ldd"
# shellcheck disable=SC2086
k=$(key "$HAPROXY_BIN" $libs)
t=$(new_tree haproxy)
mkdir -p "$t/usr/local/sbin" "$t/usr/local/etc/haproxy" "$t/var/lib/haproxy"
run install -m 0755 "$HAPROXY_BIN" "$t/usr/local/sbin/haproxy"
for l in $libs; do
  mkdir -p "$t$(dirname "$l")"
  run cp -L "$l" "$t$l"
done
import_tree "$t" "$TAG" "$k" \
  --change 'ENV PATH=/usr/local/sbin' \
  --change 'ENTRYPOINT ["/usr/local/sbin/haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
log docker run --rm --network none "$TAG" -v
docker run --rm --network none --label io.shakedown.managed=true --entrypoint /usr/local/sbin/haproxy \
  "$TAG" -v >/dev/null || die "failed to run haproxy from $TAG (missing library?)"
echo "$TAG"
