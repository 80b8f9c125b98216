#!/usr/bin/env bash
# Builds fully static Linux binaries of kubexit with the musl targets, for
# x86_64 (amd64) or aarch64 (arm64), and checks that they need nothing from
# the system they run on.
#
#   scripts/build-static.sh                 amd64 (the machine must be x86_64)
#   scripts/build-static.sh --arch arm64    arm64, cross-compiled
#   scripts/build-static.sh --full-only     the full build alone (the
#                                           Dockerfile's build stage)
#   scripts/build-static.sh --profile ci    with Cargo.toml's ci profile
#                                           instead of release
#
# The release profile (the default) is the one releases, images and
# benchmarks use: fat LTO, one codegen unit, optimised for size. The ci
# profile builds the same binaries, with the same checks below, in a
# fraction of the time (no LTO, no optimisation): what .ci/run's tests of
# the artefacts need, since they check what the binaries are and do, not
# their size or speed.
#
# Two variants:
#   amd64: $TARGET/static/kubexit        default features
#          $TARGET/static/kubexit-slim   --no-default-features
#   arm64: $TARGET/static/arm64/kubexit, $TARGET/static/arm64/kubexit-slim
# where $TARGET is $CARGO_TARGET_DIR, or target/ in the repository.
#
# With cargo-auditable installed (`cargo auditable` works), the binaries are
# built with it: the dependency tree is embedded in a `.dep-v0` section,
# where scanners such as Trivy, Grype and `cargo audit bin` read it.
# scripts/release.sh requires it; here it is used when present.
#
# Each binary is then checked: no program interpreter (PT_INTERP) and no
# shared libraries (DT_NEEDED), and a real run in an empty root filesystem:
# the binary alone in a temporary directory, entered with chroot, runs
#   /kubexit --graveyard /g --name a -- /kubexit --version
# which must exit 0 and leave the tombstone /g/a with a Died time. chroot
# needs root; without it, an unprivileged user namespace (unshare -r) is
# tried. An arm64 binary on another machine runs there through
# qemu-user-static's binfmt_misc handler (registered, with its F flag, so
# that it works inside the chroot); without the handler, only
# `qemu-aarch64-static kubexit --version` is tried. Finally the sizes are
# printed.
#
# What it installs when missing, and why: the Rust standard library for the
# target (rustup); for amd64, Debian's musl-tools (apt-get, as root) for
# musl-gcc, since ring compiles C for the TLS code; for arm64, Debian's
# gcc-aarch64-linux-gnu for the same C (linked by the toolchain's own
# rust-lld, so no musl cross toolchain is needed).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=amd64
PROFILE=release
VARIANTS=(kubexit kubexit-slim)
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=${2:?--arch needs amd64 or arm64}; shift 2 ;;
        --full-only) VARIANTS=(kubexit); shift ;;
        --profile) PROFILE=${2:?--profile needs a cargo profile: release or ci}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-static: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
TARGET=${CARGO_TARGET_DIR:-target}
case $ARCH in
    amd64) TRIPLE=x86_64-unknown-linux-musl; OUT=$TARGET/static ;;
    arm64) TRIPLE=aarch64-unknown-linux-musl; OUT=$TARGET/static/arm64 ;;
    *) echo "build-static: --arch $ARCH: amd64 or arm64" >&2; exit 2 ;;
esac

say() { printf 'build-static: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install_package() { # PACKAGE WHY
    [ "$(id -u)" -eq 0 ] || die "$2 is missing: install $1 (apt-get install $1) as root"
    say "installing $1 ($2)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# The toolchain pieces.
if ! rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE"; then
    command -v rustup >/dev/null || die "rustup is needed to add the $TRIPLE target"
    say "adding the Rust target $TRIPLE"
    rustup target add "$TRIPLE"
fi
if [ "$ARCH" = amd64 ]; then
    if [ "$(uname -m)" != x86_64 ]; then
        die "amd64 is built on x86_64 only; the machine is $(uname -m)"
    fi
    command -v musl-gcc >/dev/null || install_package musl-tools "musl-gcc, for ring's C code"
    # ring's build script compiles C with the cc crate; point it at musl's
    # wrapper so that the C code links against musl, not glibc.
    export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
else
    command -v aarch64-linux-gnu-gcc >/dev/null ||
        install_package gcc-aarch64-linux-gnu "a C cross compiler, for ring's C code"
    # ring's C (no libc calls) compiles with the GNU cross compiler; the
    # Rust toolchain's own lld links against Rust's bundled musl.
    export CC_aarch64_unknown_linux_musl=${CC_aarch64_unknown_linux_musl:-aarch64-linux-gnu-gcc}
    export AR_aarch64_unknown_linux_musl=${AR_aarch64_unknown_linux_musl:-aarch64-linux-gnu-ar}
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-rust-lld}
fi
# Not position-independent: a static PIE relocates itself at every start,
# touching every page that holds a pointer (about 70 page faults, 0.5 MiB of
# resident memory: BENCHMARKS.md). The cost is that the executable's own
# code sits at a fixed address; the stack, heap and mappings are still
# randomised.
triple_env=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')
rustflags='-C relocation-model=static'
# amd64: the code and constants a start-up uses are linked together, by
# scripts/link-startup-first.sh (read it for how). On a page fault in the
# executable the kernel maps the 64 KiB around the page; with the start-up's
# functions spread over the whole text, between the Kubernetes client, TLS
# and webhook code, an idle full build supervising a child had 2.6 MB of
# code and 0.6 MB of constants resident: peak RSS 3.33 MiB, 1.92 MiB when
# laid out, and the slim build 1.55 -> 1.36 MiB (bench/run --only memory).
# The cost: a link with lld and a pass over the relocations, about 10 s,
# after the LTO code generation, which is done once; the full build's
# final crate took 2m04s instead of 1m41s.
# Cold below means "not run by a start-up"; a wrong guess costs memory,
# never correctness. Cold crates: those the slim build does not have (the
# features' dependencies, from cargo tree, so that the list follows
# Cargo.toml), and
#   serde_saphyr, granit_parser, annotate_snippets: the tombstone reader, run
#     when a dependency's tombstone appears, not at start;
#   gimli, addr2line, rustc_demangle, miniz_oxide, libunwind: backtraces
#     and unwinding, run on a panic.
# Cold modules of kubexit: those of the optional features and of the
# subcommands that do not supervise.
# v0 symbol names spell out generic arguments (drop_in_place::<k8s_openapi::
# ...>), which the classification reads; legacy names hide them.
if [ "$ARCH" = amd64 ]; then
    rustflags+=' -C symbol-mangling-version=v0'
    export "CARGO_TARGET_${triple_env}_LINKER=${CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER:-$PWD/scripts/link-startup-first.sh}"
    crates() { # CARGO_TREE_FLAGS...: the crates of the build, one a line
        cargo tree --locked --target "$TRIPLE" --edges normal --prefix none --format '{lib}' "$@" |
            sed 's/ (\*)$//' | sort -u
    }
    KUBEXIT_COLD_CRATES="$(comm -23 <(crates) <(crates --no-default-features) | tr '\n' ' ')"
    KUBEXIT_COLD_CRATES+='serde_saphyr granit_parser annotate_snippets gimli addr2line rustc_demangle miniz_oxide libunwind'
    KUBEXIT_COLD_MODULES='inject|webhook|registry|cli::inject|cli::webhook|cli::install|cli::status|dependencies::kubernetes|readiness::tls'
    export KUBEXIT_COLD_CRATES KUBEXIT_COLD_MODULES
fi
export "CARGO_TARGET_${triple_env}_RUSTFLAGS=${RUSTFLAGS_STATIC:-$rustflags}"
CARGO_BUILD=(cargo build)
if cargo auditable --version >/dev/null 2>&1; then
    CARGO_BUILD=(cargo auditable build)
fi

mkdir -p "$OUT"

# build VARIANT OUTPUT_NAME CARGO_FLAGS...
build() {
    local variant=$1 name=$2
    shift 2
    say "building $variant: ${CARGO_BUILD[*]} --locked --profile $PROFILE --target $TRIPLE $*"
    "${CARGO_BUILD[@]}" --locked --profile "$PROFILE" --target "$TRIPLE" --bin kubexit "$@"
    # Both variants land on the same path; copy each before the next build.
    cp "$TARGET/$TRIPLE/$PROFILE/kubexit" "$OUT/$name.tmp"
    mv "$OUT/$name.tmp" "$OUT/$name"
}

build full kubexit
if [ "${#VARIANTS[@]}" -gt 1 ]; then
    build slim kubexit-slim --no-default-features
fi

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

# runs_here: whether this machine runs the target's binaries directly:
# natively, or through a registered qemu binfmt_misc handler.
runs_here() {
    [ "$ARCH" = amd64 ] && return 0
    [ "$(uname -m)" = aarch64 ] && return 0
    grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64
}

for bin in "${VARIANTS[@]/#/$OUT/}"; do
    check_static "$bin"
    if runs_here; then
        check_empty_root "$bin"
    elif command -v qemu-aarch64-static >/dev/null; then
        say "$bin: runs under qemu-aarch64-static: $(qemu-aarch64-static "$bin" --version) (no binfmt_misc handler: no run in an empty root)"
    else
        say "$bin: not run: neither an arm64 machine nor qemu-user-static"
    fi
done

printf '\n%-48s %10s %8s\n' binary bytes MiB
for bin in "${VARIANTS[@]/#/$OUT/}"; do
    bytes=$(stat -c %s "$bin")
    printf '%-48s %10d %8s\n' "$bin" "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
done
