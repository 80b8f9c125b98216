#!/usr/bin/env bash
# Builds the images that the examples name, as stand-ins made of busybox
# (no registry is reachable, and the real ones are large): each holds
# Debian's busybox-static with its applets, and a few scripts that play
# the example's programs just far enough for kubexit to supervise them.
# None of them holds kubexit: the examples' init containers copy it in.
#
#   curl     (curlimages/curl)       wget of the last argument, failing as --fail does
#   nginx    (nginx)                 busybox httpd serving a page on port 80
#   alpine   (alpine)                busybox itself
#   /cloud_sql_proxy (gce-proxy)     busybox httpd on the -instances=...=tcp:ADDR:PORT address
#   postgres (postgres)              docker-entrypoint.sh postgres: httpd on port 5432;
#                                    pg_isready and psql: wget of HOST:5432
#
# Run by tests/containers with buildah's settings in the environment; times
# are fixed, so that a rebuild gives the same image IDs.
set -euo pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

root=$work/root
mkdir -p "$root/bin" "$root/usr/bin" "$root/usr/sbin" "$root/usr/local/bin" \
    "$root/tmp" "$root/www" "$root/usr/share/nginx/html" "$root/etc"
chmod 1777 "$root/tmp"
install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
for applet in $(busybox --list | LC_ALL=C sort); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo 'stand-in' >"$root/www/index.html"
echo 'stand-in nginx' >"$root/usr/share/nginx/html/index.html"

script() { # PATH BODY
    printf '#!/bin/sh\n%s\n' "$2" >"$root$1"
    chmod 0755 "$root$1"
}
script /usr/bin/curl 'for url; do :; done
echo "curl (stand-in): GET $url" >&2
exec wget -q -O - "$url"'
script /usr/sbin/nginx 'echo "nginx (stand-in): serving on :80" >&2
exec httpd -f -p 80 -h /usr/share/nginx/html'
script /cloud_sql_proxy 'for arg; do
    case $arg in -instances=*=tcp:*) address=${arg##*=tcp:} ;; esac
done
echo "cloud_sql_proxy (stand-in): listening on ${address:?no -instances=...=tcp:ADDR:PORT}" >&2
exec httpd -f -p "$address" -h /www'
script /usr/local/bin/docker-entrypoint.sh '[ "${1:-}" = postgres ] || exec "$@"
echo "postgres (stand-in): listening on :5432" >&2
exec httpd -f -p 5432 -h /www'
script /usr/local/bin/pg_isready 'host=127.0.0.1
while [ $# -gt 0 ]; do case $1 in -h) host=$2; shift 2 ;; *) shift ;; esac; done
exec wget -q -O /dev/null "http://$host:5432/"'
script /usr/local/bin/psql 'host=127.0.0.1
while [ $# -gt 0 ]; do case $1 in -h) host=$2; shift 2 ;; *) shift ;; esac; done
wget -q -O /dev/null "http://$host:5432/" && echo "psql (stand-in): 1 row"'
chown -R 0:0 "$root"

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
buildah copy --quiet "$ctr" "$root/" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/sh "$ctr"
buildah commit --quiet --timestamp 0 --omit-history --identity-label=false "$ctr" \
    localhost/kubexit-stand-in:latest >/dev/null
for name in docker.io/curlimages/curl:8.10.1 docker.io/library/nginx:1.27-alpine \
    docker.io/library/alpine:3.20 gcr.io/cloudsql-docker/gce-proxy:1.33.2 \
    docker.io/library/postgres:16-alpine; do
    buildah tag localhost/kubexit-stand-in:latest "$name"
done
