#!/usr/bin/env bash
# Builds fully static x86_64 Linux binaries of kubexit with the musl target,
# and checks that they need nothing from the system they run on.
#
#   scripts/build-static.sh
#
# Two variants, release profile:
#   $TARGET/static/kubexit        default features
#   $TARGET/static/kubexit-slim   --no-default-features
# where $TARGET is $CARGO_TARGET_DIR, or target/ in the repository.
#
# Each binary is then checked: no program interpreter (PT_INTERP) and no
# shared libraries (DT_NEEDED), and a real run in an empty root filesystem:
# the binary alone in a temporary directory, entered with chroot, runs
#   /kubexit --graveyard /g --name a -- /kubexit --version
# which must exit 0 and leave the tombstone /g/a with a Died time. chroot
# needs root; without it, an unprivileged user namespace (unshare -r) is
# tried. Finally the sizes are printed.
#
# What it installs when missing, and why: the Rust standard library for
# x86_64-unknown-linux-musl (rustup), and Debian's musl-tools (apt-get, as
# root) for musl-gcc, since ring compiles C for the TLS probes.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIPLE=x86_64-unknown-linux-musl
TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/static

say() { printf 'build-static: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$(uname -m)" != x86_64 ]; then
    die "this script builds for x86_64; the machine is $(uname -m)"
fi

# The toolchain pieces.
if ! rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE"; then
    command -v rustup >/dev/null || die "rustup is needed to add the $TRIPLE target"
    say "adding the Rust target $TRIPLE"
    rustup target add "$TRIPLE"
fi
if ! command -v musl-gcc >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "musl-gcc is missing: install musl-tools (apt-get install musl-tools) as root"
    say "installing musl-tools (musl-gcc, for ring's C code)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools
fi
# ring's build script compiles C with the cc crate; point it at musl's
# wrapper so that the C code links against musl, not glibc.
export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}

mkdir -p "$OUT"

# build VARIANT OUTPUT_NAME CARGO_FLAGS...
build() {
    local variant=$1 name=$2
    shift 2
    say "building $variant: cargo build --locked --release --target $TRIPLE $*"
    cargo build --locked --release --target "$TRIPLE" --bin kubexit "$@"
    # Both variants land on the same path; copy each before the next build.
    cp "$TARGET/$TRIPLE/release/kubexit" "$OUT/$name.tmp"
    mv "$OUT/$name.tmp" "$OUT/$name"
}

build full kubexit
build slim kubexit-slim --no-default-features

# check_static BINARY: no interpreter, no shared libraries.
check_static() {
    local bin=$1
    if readelf --program-headers --wide "$bin" | grep -q 'INTERP'; then
        die "$bin has a program interpreter: it is dynamically linked"
    fi
    if readelf --dynamic --wide "$bin" | grep -q '(NEEDED)'; then
        die "$bin needs shared libraries: $(readelf -d "$bin" | grep NEEDED)"
    fi
    local kind
    kind=$(file -b "$bin" 2>/dev/null | grep -o 'static[-a-z]* linked' || echo 'no interpreter, no NEEDED')
    say "$bin: statically linked ($kind)"
}

# check_empty_root BINARY: runs it supervising itself in a root filesystem
# that holds nothing else.
check_empty_root() {
    local bin=$1 root status
    root=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" RETURN
    cp "$bin" "$root/kubexit"
    local enter=(chroot)
    if [ "$(id -u)" -ne 0 ]; then
        command -v unshare >/dev/null || die "chroot needs root, and unshare is missing"
        enter=(unshare --user --map-root-user chroot)
    fi
    status=0
    "${enter[@]}" "$root" /kubexit --graveyard /g --name a -- /kubexit --version \
        >"$root.out" 2>"$root.err" || status=$?
    if [ "$status" -ne 0 ]; then
        cat "$root.err" >&2
        rm -f "$root.out" "$root.err"
        die "$bin exited $status in an empty root filesystem"
    fi
    if ! grep -q '^Died: ' "$root/g/a" 2>/dev/null; then
        cat "$root.err" >&2
        rm -f "$root.out" "$root.err"
        die "$bin left no tombstone with Died in an empty root filesystem"
    fi
    say "$bin: runs in an empty root: $(tr -d '\n' <"$root.out"); tombstone $(grep -c . "$root/g/a") lines, ExitCode $(sed -n 's/^ExitCode: //p' "$root/g/a")"
    rm -f "$root.out" "$root.err"
}

for bin in "$OUT/kubexit" "$OUT/kubexit-slim"; do
    check_static "$bin"
    check_empty_root "$bin"
done

printf '\n%-48s %10s %8s\n' binary bytes MiB
for bin in "$OUT/kubexit" "$OUT/kubexit-slim"; do
    bytes=$(stat -c %s "$bin")
    printf '%-48s %10d %8s\n' "$bin" "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
done
