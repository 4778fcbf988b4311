#!/usr/bin/env bash
# The e2e images conformance specs run that no registry here has, built from Debian
# packages and from the Kubernetes tree the cluster came from, under the names
# KUBE_TEST_REPO_LIST maps them to ($IMAGE_REPO/<name>:<tag>, tags as the tree's
# test/utils/image/manifest.go gives them):
#   httpd:$HTTPD_TAGS        Debian's apache2 serving /usr/local/apache2/htdocs on port 80,
#                            as upstream's httpd image does (StatefulSet specs move
#                            htdocs/index.html away to fail the readiness probe)
#   nginx:$NGINX_TAGS        Debian's nginx serving /usr/share/nginx/html on port 80
#   kitten, nautilus         the tree's test/images/<name>/html on the agnhost image,
#                            running `test-webserver`, as the tree's Dockerfiles do
#   nonroot                  busybox as user 1234 (upstream: debian-base, USER 1234)
#   nonewprivs               the tree's nnp.go built static, setuid root (set by RUN, as
#                            upstream does: the legacy builder's COPY drops the bit), on busybox
#   sample-apiserver         the tree's staging k8s.io/sample-apiserver built static, on
#                            busybox, ENTRYPOINT /sample-apiserver as upstream's Dockerfile.
#                            The manifest's tag (1.17 on v1.20) names upstream's build of an
#                            older tree; this one is the cluster's own tree, labelled so.
#   etcd:$ETCD_E2E_TAG       the aggregator spec's etcd sidecar (it runs /usr/local/bin/etcd):
#                            the etcd component image of this machine (Debian's etcd-server),
#                            under the manifest's tag, labelled with the real version
#   jessie-dnsutils          Debian's dnsutils (dig, nslookup) on a Debian rootfs; upstream's
#                            is Debian jessie's. Only DNS specs use it, and they also need
#                            cluster DNS, which no image here provides.
# Each list of tags (the "new" tag the rolling-update specs switch to) is one image
# config per tag over one shared layer: the tags are different images (their IDs
# differ) that nodes store once.
#
# Inputs (environment): WORK (scratch, required), OUT_DIR (required), TREE (the source
# tree, required), IMAGE_REPO, AGNHOST_IMAGE and BUSYBOX_IMAGE (built by
# build-images.sh, required), HTTPD_TAGS, NGINX_TAGS, KITTEN_TAG, NAUTILUS_TAG,
# NONROOT_TAG, NONEWPRIVS_TAG, SAMPLE_APISERVER_TAG, ETCD_E2E_TAG (then ETCD_IMAGE, the
# component image, is required), JESSIE_DNSUTILS_TAG (an empty one is not built),
# DEBIAN_SUITE, DEBIAN_MIRROR, GOPATH and GOCACHE (the Kubernetes build's, to reuse its
# compiled packages).
# Outputs: $OUT_DIR/e2e-images.txt (every tag) and $OUT_DIR/e2e-images.tar.
# Idempotent: an image whose inputs did not change is not imported again, and the tar is
# not rewritten when no image changed.
set -euo pipefail
SCRIPT_NAME="build e2e images"
# shellcheck source=image-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-lib.sh"
: "${WORK:?WORK must be set}" "${OUT_DIR:?OUT_DIR must be set}" "${TREE:?TREE must be set}"
: "${AGNHOST_IMAGE:?AGNHOST_IMAGE must be set}" "${BUSYBOX_IMAGE:?BUSYBOX_IMAGE must be set}"
IMAGE_REPO=${IMAGE_REPO:-shakedown.local}
HTTPD_TAGS=${HTTPD_TAGS:-}
NGINX_TAGS=${NGINX_TAGS:-}
KITTEN_TAG=${KITTEN_TAG:-}
NAUTILUS_TAG=${NAUTILUS_TAG:-}
NONROOT_TAG=${NONROOT_TAG:-}
NONEWPRIVS_TAG=${NONEWPRIVS_TAG:-}
SAMPLE_APISERVER_TAG=${SAMPLE_APISERVER_TAG:-}
ETCD_E2E_TAG=${ETCD_E2E_TAG:-}
JESSIE_DNSUTILS_TAG=${JESSIE_DNSUTILS_TAG:-}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || die "failed to build e2e images: must run as root (debootstrap needs it)"
command -v docker >/dev/null || die "failed to find docker"
for i in "$AGNHOST_IMAGE" "$BUSYBOX_IMAGE"; do
  docker image inspect "$i" >/dev/null 2>&1 || die "failed to find $i (run the image-build step first)"
done
work_dirs
mkdir -p "$OUT_DIR"

# build_on BASE TAG KEY CONTEXT DOCKERFILE-LINES: a small layer on a local image, built
# without network, unless TAG already carries KEY.
build_on() {
  local base=$1 tag=$2 k=$3 ctx=$4 lines=$5
  built+=("$tag")
  if ! stale "$tag" "$k"; then
    echo "up to date: $tag" >&2
    return 0
  fi
  printf 'FROM %s\n%s\nLABEL io.shakedown.managed=true io.shakedown.input=%s\n' "$base" "$lines" "$k" >"$ctx/Dockerfile"
  run docker build --network none -q -t "$tag" "$ctx" >/dev/null || die "failed to build $tag"
  changed=1
}

# --- httpd and nginx: one Debian rootfs with both servers ------------------------------
if [ -n "$HTTPD_TAGS$NGINX_TAGS" ]; then
  web_rootfs=$(debian_rootfs e2e-web apache2,nginx)
  k=$(key "$web_rootfs/.shakedown-complete")
  t="$trees/e2e-web"
  any_stale=0
  for tag in $HTTPD_TAGS; do stale "$IMAGE_REPO/httpd:$tag" "$k" && any_stale=1; done
  for tag in $NGINX_TAGS; do stale "$IMAGE_REPO/nginx:$tag" "$k" && any_stale=1; done
  if [ "$any_stale" = 1 ]; then
    mkdir -p "$t"
    run rsync -a --delete --exclude=/.shakedown-complete "$web_rootfs/" "$t/" || die "failed to copy the web rootfs"
    mkdir -p "$t/usr/local/apache2/htdocs" "$t/usr/share/nginx/html" "$t/var/run/apache2" "$t/var/lock/apache2"
    echo '<html><body><h1>It works!</h1></body></html>' >"$t/usr/local/apache2/htdocs/index.html"
    cp "$t/usr/local/apache2/htdocs/index.html" "$t/usr/share/nginx/html/index.html"
    cat >"$t/etc/apache2/sites-available/000-default.conf" <<'EOF'
<VirtualHost *:80>
  DocumentRoot /usr/local/apache2/htdocs
  ErrorLog /proc/self/fd/2
  CustomLog /proc/self/fd/1 common
</VirtualHost>
<Directory /usr/local/apache2/htdocs>
  Require all granted
</Directory>
EOF
    sed -i 's|^ErrorLog .*|ErrorLog /proc/self/fd/2|' "$t/etc/apache2/apache2.conf"
    cat >"$t/usr/local/bin/httpd-foreground" <<'EOF'
#!/bin/sh
# As upstream's httpd image: the server in the foreground, logging to the container.
set -e
. /etc/apache2/envvars
mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
rm -f "$APACHE_PID_FILE"
exec /usr/sbin/apache2 -DFOREGROUND "$@"
EOF
    chmod 0755 "$t/usr/local/bin/httpd-foreground"
    cat >"$t/etc/nginx/nginx.conf" <<'EOF'
user www-data;
worker_processes 1;
error_log /dev/stderr notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log /dev/stdout;
  server {
    listen 80 default_server;
    root /usr/share/nginx/html;
    index index.html;
  }
}
EOF
  fi
  for tag in $HTTPD_TAGS; do
    import_tree "$t" "$IMAGE_REPO/httpd:$tag" "$k" \
      --change "LABEL io.shakedown.e2e-tag=httpd:$tag" \
      --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'EXPOSE 80' \
      --change 'CMD ["httpd-foreground"]'
  done
  for tag in $NGINX_TAGS; do
    import_tree "$t" "$IMAGE_REPO/nginx:$tag" "$k" \
      --change "LABEL io.shakedown.e2e-tag=nginx:$tag" \
      --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'EXPOSE 80' \
      --change 'CMD ["nginx", "-g", "daemon off;"]'
  done
fi

# --- kitten and nautilus: the tree's pictures on agnhost ----------------------------------
agnhost_id=$(docker image inspect --format '{{.Id}}' "$AGNHOST_IMAGE")
for pair in "kitten:$KITTEN_TAG" "nautilus:$NAUTILUS_TAG"; do
  name=${pair%%:*} tag=${pair#*:}
  [ -n "$tag" ] || continue
  html="$TREE/test/images/$name/html"
  [ -d "$html" ] || die "failed to find $html"
  ctx=$(new_tree "ctx-$name")
  cp "$html"/* "$ctx/"
  k=$(printf '%s\n' "$agnhost_id" | cat - "$html"/* "$0" | sha256sum | cut -c1-16)
  build_on "$AGNHOST_IMAGE" "$IMAGE_REPO/$name:$tag" "$k" "$ctx" \
    "COPY $(cd "$html" && echo *) /
CMD [\"test-webserver\"]"
done

# --- nonroot and nonewprivs on busybox ------------------------------------------------
busybox_id=$(docker image inspect --format '{{.Id}}' "$BUSYBOX_IMAGE")
if [ -n "$NONROOT_TAG" ]; then
  ctx=$(new_tree ctx-nonroot)
  k=$(printf 'nonroot %s\n' "$busybox_id" | cat - "$0" | sha256sum | cut -c1-16)
  build_on "$BUSYBOX_IMAGE" "$IMAGE_REPO/nonroot:$NONROOT_TAG" "$k" "$ctx" "USER 1234"
fi
if [ -n "$NONEWPRIVS_TAG" ]; then
  src="$TREE/test/images/nonewprivs/nnp.go"
  [ -f "$src" ] || die "failed to find $src"
  command -v go >/dev/null || die "failed to find go to build $src (apt-get install golang-go)"
  ctx=$(new_tree ctx-nonewprivs)
  k=$(printf 'nonewprivs %s\n' "$busybox_id" | cat - "$src" "$0" | sha256sum | cut -c1-16)
  fresh=0
  if stale "$IMAGE_REPO/nonewprivs:$NONEWPRIVS_TAG" "$k"; then
    fresh=1
    run env CGO_ENABLED=0 GO111MODULE=off GOCACHE="$WORK/go-cache" go build -o "$ctx/nnp" "$src" \
      || die "failed to build $src"
  fi
  build_on "$BUSYBOX_IMAGE" "$IMAGE_REPO/nonewprivs:$NONEWPRIVS_TAG" "$k" "$ctx" \
    'COPY nnp /usr/local/bin/nnp
RUN chmod 4755 /usr/local/bin/nnp
CMD ["nnp"]'
  # The specs read the effective uid a non-root user gets through the setuid bit; an
  # image already checked is not run again.
  if [ "$fresh" = 1 ]; then
    out=$(docker run --rm --network none --user 1000 --label io.shakedown.managed=true \
      "$IMAGE_REPO/nonewprivs:$NONEWPRIVS_TAG" nnp) || die "failed to run nnp"
    [ "$out" = "Effective uid: 0" ] || die "failed to keep nnp setuid root: it printed '$out' as user 1000"
  fi
fi

# --- sample-apiserver: the tree's staging sample, static, on busybox ---------------------
if [ -n "$SAMPLE_APISERVER_TAG" ]; then
  src="$TREE/staging/src/k8s.io/sample-apiserver"
  [ -f "$src/main.go" ] || die "failed to find $src/main.go"
  command -v go >/dev/null || die "failed to find go to build $src (apt-get install golang-go)"
  ctx=$(new_tree ctx-sample-apiserver)
  # The sample's sources, the tree's list of vendored modules, Go's version and this
  # script decide the binary.
  k=$( (printf 'sample-apiserver %s %s\n' "$busybox_id" "$(go version)"
    cat "$0"
    find "$src" -name '*.go' -not -name '*_test.go' | LC_ALL=C sort | xargs cat
    cat "$TREE/vendor/modules.txt" 2>/dev/null || true) | sha256sum | cut -c1-16)
  fresh=0
  if stale "$IMAGE_REPO/sample-apiserver:$SAMPLE_APISERVER_TAG" "$k"; then
    fresh=1
    # GOPATH mode inside the tree, as the Kubernetes build is, so vendor/ resolves
    # k8s.io/sample-apiserver (a symlink into staging) and its dependencies. The link is
    # pointed at this tree each time, as build-kubernetes.sh does (both hold the cache
    # lock): it may name another version's tree.
    gopath=${GOPATH:-$WORK/gopath}
    mkdir -p "$gopath/src/k8s.io"
    ln -sfn "$TREE" "$gopath/src/k8s.io/kubernetes"
    log "go build k8s.io/sample-apiserver (in $gopath/src/k8s.io/kubernetes)"
    ( cd "$gopath/src/k8s.io/kubernetes" \
      && env GOPATH="$gopath" GO111MODULE=off GOFLAGS= CGO_ENABLED=0 \
        GOCACHE="${GOCACHE:-$WORK/go-cache}" go build -o "$ctx/sample-apiserver" ./vendor/k8s.io/sample-apiserver ) \
      || die "failed to build $src"
  fi
  build_on "$BUSYBOX_IMAGE" "$IMAGE_REPO/sample-apiserver:$SAMPLE_APISERVER_TAG" "$k" "$ctx" \
    "COPY sample-apiserver /sample-apiserver
LABEL io.shakedown.e2e-tag=sample-apiserver:$SAMPLE_APISERVER_TAG io.shakedown.built-from=the-cluster-tree
ENTRYPOINT [\"/sample-apiserver\"]"
  # A new build must start; an image already checked is not run again.
  if [ "$fresh" = 1 ]; then
    docker run --rm --network none --label io.shakedown.managed=true \
      "$IMAGE_REPO/sample-apiserver:$SAMPLE_APISERVER_TAG" --help >/dev/null 2>&1 \
      || die "failed to run $IMAGE_REPO/sample-apiserver:$SAMPLE_APISERVER_TAG --help"
  fi
fi

# --- etcd: the component image under the manifest's tag -------------------------------
if [ -n "$ETCD_E2E_TAG" ]; then
  : "${ETCD_IMAGE:?ETCD_IMAGE must be set to build etcd:$ETCD_E2E_TAG}"
  etcd_id=$(docker image inspect --format '{{.Id}}' "$ETCD_IMAGE") \
    || die "failed to find $ETCD_IMAGE (run the image-build step first)"
  ctx=$(new_tree ctx-etcd)
  k=$(printf 'etcd %s\n' "$etcd_id" | cat - "$0" | sha256sum | cut -c1-16)
  # The real version goes into the label, so it is read only when the image is made.
  real=unread
  if stale "$IMAGE_REPO/etcd:$ETCD_E2E_TAG" "$k"; then
    real=$(docker run --rm --network none --label io.shakedown.managed=true --entrypoint /usr/local/bin/etcd \
      "$ETCD_IMAGE" --version | sed -n 's/^etcd Version: //p') || die "failed to run $ETCD_IMAGE --version"
  fi
  build_on "$ETCD_IMAGE" "$IMAGE_REPO/etcd:$ETCD_E2E_TAG" "$k" "$ctx" \
    "LABEL io.shakedown.e2e-tag=etcd:$ETCD_E2E_TAG io.shakedown.etcd-version=$real"
fi

# --- jessie-dnsutils: Debian's dnsutils -------------------------------------------------
if [ -n "$JESSIE_DNSUTILS_TAG" ]; then
  dns_rootfs=$(debian_rootfs e2e-dnsutils dnsutils)
  k=$(key "$dns_rootfs/.shakedown-complete")
  fresh=0
  stale "$IMAGE_REPO/jessie-dnsutils:$JESSIE_DNSUTILS_TAG" "$k" && fresh=1
  import_tree "$dns_rootfs" "$IMAGE_REPO/jessie-dnsutils:$JESSIE_DNSUTILS_TAG" "$k" \
    --change "LABEL io.shakedown.e2e-tag=jessie-dnsutils:$JESSIE_DNSUTILS_TAG" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]'
  if [ "$fresh" = 1 ]; then
    docker run --rm --network none --label io.shakedown.managed=true \
      "$IMAGE_REPO/jessie-dnsutils:$JESSIE_DNSUTILS_TAG" dig -v >/dev/null 2>&1 \
      || die "failed to run dig in $IMAGE_REPO/jessie-dnsutils:$JESSIE_DNSUTILS_TAG"
  fi
fi

# --- outputs --------------------------------------------------------------------------
[ "${#built[@]}" -gt 0 ] || die "failed to find any e2e image to build: every tag is empty"
save_images "$OUT_DIR" e2e-images
