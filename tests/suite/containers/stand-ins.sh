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
#   /cloud-sql-proxy                 the entrypoint of cloud-sql-proxy 2: httpd on --port
#     (cloud-sql-connectors 2.13.0)  (5432 by default) and its health check, /readiness
#                                    on --http-address:9090
#   apk (alpine)                     says it adds packages, and adds none: curl is there
#   migrate (migrate/migrate)        wget of the -database address's HOST:PORT
#   pilot-agent (istio/proxyv2)      the entrypoint of Istio's proxy: /healthz/ready (and
#                                    a page, /run) on 15021; POST /quitquitquit on 15020
#                                    ends it, as pilot-agent does; with
#                                    STAND_IN_START_DELAY=SECONDS, it listens only after
#                                    that long (a proxy slow to start)
#
# Run by tests/containers with buildah's settings in the environment; times
# are fixed, so that a rebuild gives the same image IDs.
set -euo pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/usr/local/bin" \
    "$root/tmp" "$root/www" "$root/usr/share/nginx/html" "$root/etc" "$root/health" \
    "$root/istio/healthz"
chmod 1777 "$root/tmp"
install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
for applet in $(busybox --list | LC_ALL=C sort); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo 'stand-in' >"$root/www/index.html"
echo 'stand-in nginx' >"$root/usr/share/nginx/html/index.html"
echo 'ok' >"$root/health/readiness"
echo 'ok' >"$root/istio/healthz/ready"
echo 'report run (stand-in)' >"$root/istio/run"

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
script /cloud-sql-proxy 'port=5432 address=127.0.0.1
for arg; do
    case $arg in --port=*) port=${arg#--port=} ;; --http-address=*) address=${arg#--http-address=} ;; esac
done
echo "cloud-sql-proxy (stand-in): listening on 127.0.0.1:$port, health on $address:9090" >&2
httpd -f -p "127.0.0.1:$port" -h /www &
exec httpd -f -p "$address:9090" -h /health'
script /usr/local/bin/pilot-agent '# The quit below ends this shell with SIGTERM; as PID 1 it is deaf to
# it without a trap, so the trap comes before anything listens.
trap "exit 0" TERM
if [ -n "${STAND_IN_START_DELAY:-}" ]; then
    echo "pilot-agent (stand-in): starting in ${STAND_IN_START_DELAY}s" >&2
    sleep "$STAND_IN_START_DELAY"
fi
echo "pilot-agent (stand-in): ready on :15021, quit on :15020" >&2
main=$$
(
    while :; do
        printf "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" |
            nc -l -p 15020 >/tmp/request 2>/dev/null
        if grep -q "^POST /quitquitquit" /tmp/request; then
            echo "pilot-agent (stand-in): quitquitquit" >&2
            kill "$main"
            exit 0
        fi
    done
) &
# Ready only once the quit endpoint listens (15020 is 3AAC), as the real
# pilot-agent serves both before it says ready.
until grep -qs ":3AAC [0-9A-F]*:0000 0A" /proc/net/tcp /proc/net/tcp6; do sleep 0.05; done
httpd -f -p 15021 -h /istio &
wait'
script /sbin/apk 'echo "apk (stand-in): $* (the stand-in has every program already)" >&2'
script /usr/local/bin/migrate 'for arg; do
    case $arg in postgres://*) address=${arg#*@}; address=${address%%/*} ;; esac
done
wget -q -O /dev/null "http://${address:?no -database postgres://USER@HOST:PORT/DB}/" &&
    echo "migrate (stand-in): up, through $address"'
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
for name in docker.io/curlimages/curl:8.10.1 docker.io/curlimages/curl:8.11.0 docker.io/library/nginx:1.27-alpine \
    docker.io/library/alpine:3.20 gcr.io/cloudsql-docker/gce-proxy:1.33.2 \
    docker.io/library/postgres:16-alpine docker.io/migrate/migrate:v4.17.1; do
    buildah tag localhost/kubexit-stand-in:latest "$name"
done
# Images whose containers give no command run their ENTRYPOINT.
for image in gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.13.0=/cloud-sql-proxy \
    gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1=/cloud-sql-proxy \
    docker.io/istio/proxyv2:1.24.0=/usr/local/bin/pilot-agent; do
    buildah config --cmd '' "$ctr"
    buildah config --entrypoint "[\"${image#*=}\"]" "$ctr"
    buildah commit --quiet --timestamp 0 --omit-history --identity-label=false "$ctr" \
        "${image%%=*}" >/dev/null
done
