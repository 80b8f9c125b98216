#!/usr/bin/env bash
# Makes a certificate for kubexit's webhook without cert-manager: a CA of
# its own and a serving certificate signed by it, and writes to standard
# output the two objects that use them, ready for kubectl:
#
#   deploy/webhook/self-signed.sh | kubectl apply -f -
#
# - the Secret kubexit-webhook-tls (type kubernetes.io/tls: tls.crt,
#   tls.key, and ca.crt), which the webhook's Deployment mounts at /tls;
# - the MutatingWebhookConfiguration of mutating-webhook.yaml with the CA
#   as its caBundle (instead of cert-manager's annotation), so that the API
#   server trusts the webhook.
#
# Options:
#   --namespace NS   the webhook's namespace (default kubexit)
#   --service NAME   its Service (default kubexit-webhook); the certificate
#                    is for NAME.NS.svc, the name the API server calls
#   --ip ADDR        also for this IP address (repeatable), for a webhook
#                    reached by URL (tests register one on 127.0.0.1)
#   --days N         validity of both certificates (default 365); run the
#                    script again before then: the webhook reads the new
#                    Secret's files as soon as the kubelet updates them
#   --out DIR        keep ca.crt, ca.key, tls.crt and tls.key in DIR
#                    (default: a temporary directory, removed at the end)
#
# Needs openssl and base64. Keys are ECDSA P-256.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

namespace=kubexit
service=kubexit-webhook
days=365
out=
ips=()
die() { printf 'self-signed.sh: %s\n' "$*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
        --service) service=${2:?--service needs a value}; shift 2 ;;
        --ip) ips+=("${2:?--ip needs a value}"); shift 2 ;;
        --days) days=${2:?--days needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a value}; shift 2 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $days in '' | *[!0-9]*) die "--days $days: write a number of days" ;; esac
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"

if [ -n "$out" ]; then
    mkdir -p "$out"
    dir=$out
else
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
fi

host=$service.$namespace.svc
names="DNS:$host,DNS:$host.cluster.local"
for ip in "${ips[@]}"; do names="$names,IP:$ip"; done

# openssl says what it does on standard error; only failures matter.
run() { "$@" 2>"$dir/openssl.log" || { cat "$dir/openssl.log" >&2; die "openssl failed"; }; }
run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/CN=kubexit webhook CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt"
run openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$host" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr"
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' \
    "$names" >"$dir/tls.ext"
run openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -extfile "$dir/tls.ext" -out "$dir/tls.crt"
rm -f "$dir/tls.csr" "$dir/tls.ext" "$dir/ca.srl" "$dir/openssl.log"

b64() { base64 -w0 <"$1"; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: kubexit-webhook-tls
  namespace: $namespace
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$dir/tls.crt")
  tls.key: $(b64 "$dir/tls.key")
  ca.crt: $(b64 "$dir/ca.crt")
---
YAML
# The configuration as mutating-webhook.yaml has it (its comments left
# out), with the CA in place of cert-manager's annotation, and the Service's
# namespace and name as given.
ca=$(b64 "$dir/ca.crt")
sed -e '/^#/d' \
    -e '/^  annotations:$/d' \
    -e '/cert-manager.io\/inject-ca-from:/d' \
    -e "s|^\( *\)clientConfig:\$|&\n\1  caBundle: $ca|" \
    -e "s|^\( *\)namespace: kubexit\$|\1namespace: $namespace|" \
    -e "s|^\( *\)name: kubexit-webhook\$|\1name: $service|" \
    "$here/mutating-webhook.yaml"
