#!/usr/bin/env bash
# A linker for rustc that puts the code and read-only data a start-up uses
# next to each other, so that a supervising kubexit maps less of its own
# executable. scripts/build-static.sh sets it as the linker of the amd64
# builds (x86_64-unknown-linux-musl); rustc calls it as it would call cc,
# and it links with the toolchain's lld. (The arm64 builds link with
# rust-lld directly, in its own argument syntax, and are not laid out.)
#
# Why: on a page fault in a file mapping the kernel maps the 64 KiB around
# the page when those pages are cached (fault-around). A start-up runs a few
# hundred kB of functions, but in link order they are spread over the whole
# text, between the Kubernetes client, TLS and webhook code that a plain
# supervisor never runs, so most of the text ended up resident (BENCHMARKS.md,
# "Peak RSS of the full build").
#
# How, in two links with lld and a pass over the relocations (about 10 s in
# all for the full build; the LTO code generation before them is done once):
#   1. the same link without stripping, to read the functions' names;
#   2. an order: every function whose demangled name mentions none of the
#      cold crates or cold kubexit modules comes first, in the order of the
#      first link (lld's --symbol-ordering-file), with the small functions
#      they call; the read-only data that they refer to (relocations in
#      rustc's object files)
#      goes into a section of its own in front of .rodata (a linker script
#      with INSERT: most constants have no symbol for lld to order them by);
#   3. the link as asked, with that order.
# The order is derived from the source at every build, so no list of
# symbols is kept in the repository. It only decides where code lies, never
# whether it is linked: a wrong guess costs memory, not correctness.
#
# Environment (from scripts/build-static.sh):
#   KUBEXIT_COLD_CRATES    crate names, space-separated, whose code a
#                          start-up does not run
#   KUBEXIT_COLD_MODULES   kubexit's modules a start-up does not run, as
#                          paths below the crate, `|`-separated
#                          (inject|cli::webhook)
# Functions that implement GlobalAlloc stay hot whatever module they are in:
# every allocation runs them.
set -euo pipefail

die() { printf 'link-startup-first: error: %s\n' "$*" >&2; exit 1; }

# rustc puts its own tool directory, with rust-lld and gcc-ld/ld.lld, first
# on the PATH of the linker it runs.
lld=$(command -v rust-lld) || die "rust-lld is not on PATH (is this run by rustc?)"
link() { cc -fuse-ld=lld -B"$(dirname "$lld")/gcc-ld" "$@"; }

out='' prev=''
for arg in "$@"; do
    case $arg in
        # rustc passes its arguments in a file only when the command line is
        # too long for the system; kubexit's, with one LTO object, is short.
        @*) die "arguments in a response file ($arg) are not supported" ;;
    esac
    [ "$prev" = -o ] && out=$arg
    prev=$arg
done
[ -n "$out" ] || die "no -o in the linker arguments"

work=$(mktemp -d "$out.layout.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The link as asked, into $work, with its symbols.
first=() objects=() prev=''
for arg in "$@"; do
    if [ "$prev" = -o ]; then
        first+=("$work/unordered")
    else
        case $arg in
            -s | -Wl,-s | -Wl,--strip-all | -Wl,--strip-debug) ;;
            *.o) first+=("$arg"); objects+=("$arg") ;;
            *) first+=("$arg") ;;
        esac
    fi
    prev=$arg
done
link "${first[@]}"

# 2. The order. Functions by address in the first link (nm -n), with their
#    sizes; c++filt turns v0 and legacy Rust names into paths that name
#    every crate, generic arguments included.
nm -n -S --defined-only "$work/unordered" |
    awk 'NF == 4 && $3 ~ /^[tTwW]$/ { print $4 "\t" strtonum_hex($2) }
        function strtonum_hex(h,   i, n) {
            n = 0
            for (i = 1; i <= length(h); i++) n = n * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
            return n
        }' >"$work/functions"
[ -s "$work/functions" ] || die "the first link has no function symbols: was it stripped?"
cut -f1 "$work/functions" | c++filt | paste -d '\t' "$work/functions" - |
    awk -F '\t' -v crates="${KUBEXIT_COLD_CRATES:-}" -v modules="${KUBEXIT_COLD_MODULES:-}" '
        BEGIN {
            gsub(/^ +| +$/, "", crates); gsub(/ +/, "|", crates)
            # A crate starts a path: at the start of the name or after <, &,
            # a space, a comma...; never after :: (core::slice::memchr).
            cold_crate = crates == "" ? "" : "(^|[^A-Za-z0-9_:])(" crates ")(\\[[0-9a-f]+\\])?::"
            cold_module = modules == "" ? "" : "(^|[^A-Za-z0-9_:])kubexit(\\[[0-9a-f]+\\])?::(" modules ")::"
        }
        $3 ~ /GlobalAlloc/ { print $1; next }
        cold_crate != "" && $3 ~ cold_crate { next }
        cold_module != "" && $3 ~ cold_module { next }
        { print $1 }' >"$work/hot"

#    Then what the hot functions refer to, from the relocations in rustc's
#    object files. These name each function's section .text.NAME (or
#    .text.unlikely.NAME) and refer to most constants by their section
#    (.rodata..Lanon.*, jump tables .rodata.NAME), to statics by name.
#    - Constants: into .rodata.startup, with the constants that those and
#      the statics refer to in turn (tracing's call-site metadata and its
#      strings).
#    - Statics: after the functions in the order, lld places data by symbol
#      too.
#    - The small functions they call that were classed cold. LLVM merges
#      functions with identical code (RawVec<T>::grow_one for every T of one
#      size) and keeps one name, maybe a Kubernetes type's: 19 such functions
#      a start-up runs were once spread over 8 windows of 64 KiB. Up to 256
#      bytes, so that a cold module's entry point called from the command
#      line's dispatch stays cold.
: >"$work/rodata"
: >"$work/callees"
if [ "${#objects[@]}" -gt 0 ]; then
    readelf -rW "${objects[@]}" 2>/dev/null |
        awk -v rodata="$work/rodata" -v callees="$work/callees" '
            FNR == 1 { part++ }
            part == 1 { size[$1] = $2; next }
            part == 2 { hot[$1] = 1; next }
            /^Relocation section / {
                from = $3; gsub(/\047/, "", from); sub(/^\.rela/, "", from)
                name = from
                in_hot = sub(/^\.text\./, "", name) && (sub(/^unlikely\./, "", name) || 1) && (name in hot)
                in_data = from !~ /^\.text/
                next
            }
            NF < 5 { next }
            in_data { refers[from, ++refers[from]] = $5; next }
            !in_hot { next }
            $5 ~ /^\.rodata/ { constant($5); next }
            $5 ~ /^\.data/ { reached($5); next }
            {
                callee = $5
                sub(/^\.text\./, "", callee); sub(/^unlikely\./, "", callee)
                if (callee in size) {
                    if (!(callee in hot) && !(callee in seen) && size[callee] <= 256) {
                        seen[callee] = 1; print callee >callees
                    }
                } else if (callee !~ /^\./ && !(callee in seen)) {
                    seen[callee] = 1; print callee >callees
                    reached(".rodata." callee); reached(".data.rel.ro." callee); reached(".data." callee)
                }
            }
            function constant(section) {
                if (section in seen) return
                seen[section] = 1; print "      " section >rodata
                reached(section)
            }
            function reached(section) {
                if (section in queued) return
                queued[section] = 1; queue[++queue_end] = section
            }
            # Whatever reached data refers to, to the end of the chain.
            END {
                for (q = 1; q <= queue_end; q++) {
                    from = queue[q]
                    for (i = 1; i <= refers[from] + 0; i++) {
                        to = refers[from, i]
                        if (to ~ /^\.rodata/) constant(to)
                        else if (to ~ /^\.data/) reached(to)
                    }
                }
            }' "$work/functions" "$work/hot" -
fi
cat "$work/hot" "$work/callees" >"$work/order"
{
    echo 'SECTIONS {'
    echo '  .rodata.startup : {'
    # The C library's few constants (4.7 kB: malloc's size classes...).
    echo '    *libc.a:*(.rodata .rodata.*)'
    echo '    *('
    cat "$work/rodata"
    echo '    )'
    echo '  }'
    echo '} INSERT BEFORE .rodata;'
} >"$work/layout.ld"

# 3. The link as asked, in that order.
link "$@" -Wl,--symbol-ordering-file="$work/order" -Wl,--no-warn-symbol-ordering \
    -Wl,-T,"$work/layout.ld"
