#!/usr/bin/env bash
# Builds kubexit's container images from the static binaries, offline and
# reproducibly, with buildah: no registry, no base image to pull.
#
#   scripts/build-images.sh [--arch amd64,arm64] [--oci-dir DIR]
#
# The images are the Dockerfile's two stages, built from files instead of
# FROM lines:
#   kubexit:VERSION-ARCH          busybox (Debian's busybox-static, its applets
#                                 as symbolic links in /bin), Debian's CA
#                                 bundle (/etc/ssl/certs/ca-certificates.crt,
#                                 for the registry client) and /bin/kubexit
#   kubexit:VERSION-scratch-ARCH  nothing but /bin/kubexit
# Both have ENTRYPOINT ["/bin/kubexit"] and no CMD, as the Dockerfile's, and
# the OCI labels source, version, revision, licenses, title, description
# and created. For each of them, kubexit:VERSION and kubexit:VERSION-scratch
# are image indexes (manifest lists) over the architectures built, and the
# machine's own architecture is also tagged kubexit:latest and
# kubexit:scratch. With --oci-dir, each index is written with all its
# images to DIR/kubexit-VERSION[-scratch].oci.tar (an OCI archive, for
# `skopeo copy oci-archive:FILE docker://REGISTRY/kubexit:VERSION`), named
# inside (its org.opencontainers.image.ref.name) as the published image:
# ghcr.io/kubexit/kubexit:VERSION[-scratch], the image `kubexit inject`
# installs from by default, so that a node loading the archive
# (`ctr images import`) has the image injected pods ask for.
#
# Reproducible: every time in the images (file times, the created time) is
# the last commit's time (SOURCE_DATE_EPOCH when set), no build history and
# no builder label are recorded, and files are added in a fixed order, so
# the same binaries give the same image IDs.
#
# Input: the static binaries of scripts/build-static.sh, $TARGET/static/kubexit
# for amd64 and $TARGET/static/arm64/kubexit for arm64, where $TARGET is
# $CARGO_TARGET_DIR or target/.
#
# What it installs when missing, and why (apt-get, as root): buildah, to
# build images without a daemon or registry; busybox-static, the busybox
# of the default image (for arm64, busybox-static:arm64 is downloaded and
# unpacked, not installed, after `dpkg --add-architecture arm64`).
# buildah's settings are its own (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF):
# the tests point them at private files.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'build-images: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

ARCHES=$(case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)
NATIVE=$ARCHES
OCI_DIR=
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCHES=${2:?--arch needs a list such as amd64,arm64}; shift 2 ;;
        --oci-dir) OCI_DIR=${2:?--oci-dir needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
IFS=, read -r -a ARCH_LIST <<<"$ARCHES"

TARGET=${CARGO_TARGET_DIR:-target}
binary_for() {
    case $1 in
        amd64) echo "$TARGET/static/kubexit" ;;
        arm64) echo "$TARGET/static/arm64/kubexit" ;;
        *) die "no static build for architecture $1 (amd64 or arm64)" ;;
    esac
}

# What the labels say, from Cargo.toml and git.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
LICENSE=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -n1)
DESCRIPTION=$(sed -n 's/^description = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The repository the image names (ghcr.io/kubexit/kubexit) point at;
# Cargo.toml's `repository` wins when it has one.
SOURCE=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n1)
SOURCE=${SOURCE:-https://github.com/kubexit/kubexit}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REVISION=$REVISION-dirty
fi
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# The tools.
need_package() { # COMMAND PACKAGE
    command -v "$1" >/dev/null && return
    [ "$(id -u)" -eq 0 ] || die "$1 is missing: install $2 (apt-get install $2) as root"
    say "installing $2 (for $1)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need_package buildah buildah
need_package busybox busybox-static
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_package update-ca-certificates ca-certificates

WORK=$(mktemp -d)
CONTAINERS=()
cleanup() {
    for c in "${CONTAINERS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# busybox_for ARCH: the path of a static busybox for ARCH.
busybox_for() {
    local arch=$1 host
    host=$(dpkg --print-architecture)
    if [ "$arch" = "$host" ]; then
        command -v busybox
        return
    fi
    local dir=$WORK/busybox-$arch
    if [ ! -x "$dir/bin/busybox" ]; then
        if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
            [ "$(id -u)" -eq 0 ] || die "busybox for $arch needs: dpkg --add-architecture $arch && apt-get update (as root)"
            say "adding the $arch architecture to dpkg (for busybox-static:$arch)"
            dpkg --add-architecture "$arch"
            apt-get update -qq
        fi
        mkdir -p "$dir"
        (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "busybox-static:$arch" >/dev/null) ||
            { apt-get update -qq && (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "busybox-static:$arch" >/dev/null); }
        dpkg-deb -x "$dir"/busybox-static_*.deb "$dir"
    fi
    echo "$dir/bin/busybox"
}

# rootfs_busybox DIR ARCH: busybox's root filesystem, as the busybox image
# lays it out: /bin/busybox, one symbolic link per applet, /tmp, and the
# root and nobody users.
rootfs_busybox() {
    local dir=$1 arch=$2
    mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root"
    chmod 1777 "$dir/tmp"
    chmod 0700 "$dir/root"
    install -m 0755 "$(busybox_for "$arch")" "$dir/bin/busybox"
    # The applet list of the host's busybox: the same Debian version and
    # configuration on every architecture.
    local applet
    for applet in $(busybox --list | LC_ALL=C sort); do
        [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
    # The CAs that `kubexit webhook` reads registries over TLS with (the
    # system store at its usual path); the scratch image has none.
    mkdir -p "$dir/etc/ssl/certs"
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
}

# build IMAGE ARCH VARIANT: one image, committed with fixed times.
build() {
    local image=$1 arch=$2 variant=$3 bin ctr root
    bin=$(binary_for "$arch")
    [ -x "$bin" ] || die "$bin is missing: build it with scripts/build-static.sh${arch:+ --arch $arch}"
    root=$WORK/root-$variant-$arch
    mkdir -p "$root/bin"
    if [ "$variant" = default ]; then
        rootfs_busybox "$root" "$arch"
    fi
    install -m 0755 "$bin" "$root/bin/kubexit"
    # Every file gets the same owner; the commit gives it the same time.
    chown -R 0:0 "$root"

    ctr=$(buildah from --arch "$arch" scratch)
    CONTAINERS+=("$ctr")
    buildah copy --quiet "$ctr" "$root/" / >/dev/null
    local config=(
        --arch "$arch" --os linux
        --entrypoint '["/bin/kubexit"]'
        --label "org.opencontainers.image.title=kubexit"
        --label "org.opencontainers.image.description=$DESCRIPTION"
        --label "org.opencontainers.image.source=$SOURCE"
        --label "org.opencontainers.image.version=$VERSION"
        --label "org.opencontainers.image.revision=$REVISION"
        --label "org.opencontainers.image.licenses=$LICENSE"
        --label "org.opencontainers.image.created=$CREATED"
    )
    if [ "$variant" = default ]; then
        config+=(--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    fi
    buildah config "${config[@]}" "$ctr"
    buildah commit --quiet --rm --timestamp "$EPOCH" --omit-history --identity-label=false \
        "$ctr" "$image" >/dev/null
    CONTAINERS=("${CONTAINERS[@]/$ctr}")
    say "$image: $(buildah images --noheading --format '{{.ID}} {{.Size}}' "$image")"
}

for variant in default scratch; do
    suffix=${variant/default/}
    suffix=${suffix:+-$suffix}
    native_tag=${variant/default/latest}
    list=localhost/kubexit:$VERSION$suffix
    buildah manifest rm "$list" >/dev/null 2>&1 || buildah rmi "$list" >/dev/null 2>&1 || true
    buildah manifest create "$list" >/dev/null
    for arch in "${ARCH_LIST[@]}"; do
        image=localhost/kubexit:$VERSION$suffix-$arch
        build "$image" "$arch" "$variant"
        buildah manifest add --arch "$arch" --os linux "$list" "containers-storage:$image" >/dev/null
        if [ "$arch" = "$NATIVE" ]; then
            buildah tag "$image" "localhost/kubexit:$native_tag"
        fi
    done
    say "$list: an index over ${ARCH_LIST[*]}"
    if [ -n "$OCI_DIR" ]; then
        mkdir -p "$OCI_DIR"
        archive=$OCI_DIR/kubexit-$VERSION$suffix.oci.tar
        rm -f "$archive"
        buildah manifest push --quiet --all "$list" \
            "oci-archive:$archive:ghcr.io/kubexit/kubexit:$VERSION$suffix" >/dev/null
        say "$archive: $(stat -c %s "$archive") bytes"
    fi
done
