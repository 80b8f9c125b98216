#!/usr/bin/env bash
# Romeo and Juliet: two processes supervised by kubexit share a graveyard.
# Juliet declares Romeo a death dependency; when Romeo dies, kubexit stops
# Juliet. No cluster needed: the graveyard is a temporary directory.
#
#   ./demo/romeo-and-juliet.sh          builds kubexit, then runs the story
#   KUBEXIT_BIN=path/to/kubexit ./demo/romeo-and-juliet.sh   uses that binary
set -euo pipefail
cd "$(dirname "$0")/.."

kubexit=${KUBEXIT_BIN:-}
if [ -z "$kubexit" ]; then
    echo "Building kubexit (cargo build)..."
    cargo build --quiet
    kubexit=${CARGO_TARGET_DIR:-target}/debug/kubexit
fi

graveyard=$(mktemp -d)
trap 'rm -rf "$graveyard"' EXIT
export KUBEXIT_GRAVEYARD=$graveyard
# kubexit logs to stderr; show its lines here, prefixed to tell them apart.
label() { sed -u "s/^/    [kubexit $1] /"; }

echo "== Juliet starts. KUBEXIT_DEATH_DEPS=romeo: she lives until Romeo dies."
KUBEXIT_NAME=juliet KUBEXIT_DEATH_DEPS=romeo KUBEXIT_GRACE_PERIOD=5s \
    "$kubexit" sh -c 'trap "echo \"juliet: stopped, exiting\"; exit 0" TERM
                      echo "juliet: alive"; sleep 1000 & wait' \
    2> >(label juliet) &
juliet=$!
for _ in $(seq 100); do [ -s "$graveyard/juliet" ] && break; sleep 0.05; done

echo "== Romeo runs for a moment, then dies with status 3."
romeo_status=0
KUBEXIT_NAME=romeo "$kubexit" sh -c 'echo "romeo: alive"; sleep 1; echo "romeo: dying"; exit 3' \
    2> >(label romeo) || romeo_status=$?

juliet_status=0
wait "$juliet" || juliet_status=$?
sleep 0.1 # let the log prefixers drain

echo
echo "== What happened"
echo "romeo's kubexit exited with status $romeo_status (his own status)."
echo "juliet's kubexit exited with status $juliet_status (stopped because a death dependency died: 0 by default)."
for name in romeo juliet; do
    echo
    echo "-- tombstone $graveyard/$name"
    cat "$graveyard/$name"
done
