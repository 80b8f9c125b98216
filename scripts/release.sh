#!/usr/bin/env bash
# Builds kubexit's release artefacts, for amd64 and arm64, in one go.
#
#   scripts/release.sh [--out DIR] [--no-images] [--profile ci]
#
# Into DIR (default $TARGET/dist, $TARGET being $CARGO_TARGET_DIR or
# target/):
#   kubexit-VERSION-linux-amd64.tar.gz   the static binaries kubexit (full)
#   kubexit-VERSION-linux-arm64.tar.gz   and kubexit-slim, README.md and
#                                        LICENSE (Apache-2.0), in a
#                                        directory of the same name
#   kubexit-VERSION.oci.tar              the busybox image, and the scratch
#   kubexit-VERSION-scratch.oci.tar      image, each an OCI archive holding an
#                                        index over both architectures
#   SHA256SUMS                           the sha256 of each file above
# Every binary carries its dependency tree (cargo-auditable's `.dep-v0`
# section: crate names, versions and sources, as resolved by Cargo.lock),
# which Trivy, Grype, Syft and `cargo audit bin` read from the binary
# itself, in the tarball or in an image. tests/suite/release.rs checks all of it:
# the sums verify, each binary is static, of its architecture, and carries
# its dependencies.
#
# The tarballs are reproducible: sorted entries, owner 0, every time the
# last commit's (SOURCE_DATE_EPOCH when set), gzip without a name or time.
#
# What it installs when missing, and why: cargo-auditable (cargo install
# --locked), to embed the dependency tree; and, through the scripts it runs,
# the musl targets and C compilers of scripts/build-static.sh and the
# buildah and busybox-static of scripts/build-images.sh. --no-images leaves
# the images out (no buildah needed). --profile ci builds the binaries with
# the quick ci profile (scripts/build-static.sh says what it leaves out):
# artefacts of the same shape for .ci/run to check, never to publish.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'release: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/dist
IMAGES=yes
PROFILE=release
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --no-images) IMAGES=no; shift ;;
        --profile) PROFILE=${2:?--profile needs a cargo profile: release or ci}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

if ! cargo auditable --version >/dev/null 2>&1; then
    say "installing cargo-auditable (to embed the dependency tree in the binaries)"
    cargo install --locked --quiet cargo-auditable
fi

scripts/build-static.sh --arch amd64 --profile "$PROFILE"
scripts/build-static.sh --arch arm64 --profile "$PROFILE"

rm -rf "$OUT"
mkdir -p "$OUT"
for arch in amd64 arm64; do
    dir=$TARGET/static
    [ "$arch" = amd64 ] || dir=$TARGET/static/$arch
    name=kubexit-$VERSION-linux-$arch
    stage=$(mktemp -d)
    mkdir "$stage/$name"
    install -m 0755 "$dir/kubexit" "$dir/kubexit-slim" "$stage/$name/"
    install -m 0644 README.md LICENSE "$stage/$name/"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -C "$stage" -cf - "$name" | gzip -9 -n >"$OUT/$name.tar.gz"
    rm -rf "$stage"
    say "$OUT/$name.tar.gz"
done

if [ "$IMAGES" = yes ]; then
    scripts/build-images.sh --arch amd64,arm64 --oci-dir "$OUT"
fi

(cd "$OUT" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort |
    xargs sha256sum >SHA256SUMS)
say "$OUT/SHA256SUMS:"
cat "$OUT/SHA256SUMS" >&2
