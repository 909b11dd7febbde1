#!/usr/bin/env bash
# Make the webhook's serving certificate (signed by a fresh CA, with subjectAltNames for the
# Service) and wire it up: the Secret the Deployment mounts, and the caBundle of the
# Mutating- and ValidatingWebhookConfiguration (both named --webhook, default chaos-injector).
#
#   deploy/gen-certs.sh [--namespace NS] [--service NAME] [--secret NAME] [--webhook NAME]
#                       [--out DIR] [--days N] [--no-kubectl] [--patch-file FILE]...
#
# --no-kubectl only writes ca.crt, tls.crt, tls.key (and patches each --patch-file, a copy of
# mutating-webhook.yaml or validating-webhook.yaml, in place); otherwise kubectl creates/updates
# the Secret and patches the live webhook configurations (one that does not exist is skipped).
set -euo pipefail

ns=chaos-testing service=chaos-injector secret=chaos-injector-certs webhook=chaos-injector
out="" days=825 use_kubectl=1 patch_files=()
while (($#)); do
    case $1 in
        --namespace) ns=$2; shift 2 ;;
        --service) service=$2; shift 2 ;;
        --secret) secret=$2; shift 2 ;;
        --webhook) webhook=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --days) days=$2; shift 2 ;;
        --no-kubectl) use_kubectl=0; shift ;;
        --patch-file) patch_files+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "gen-certs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is required" >&2; exit 1; }
if ((use_kubectl)); then
    command -v kubectl >/dev/null || { echo "gen-certs.sh: kubectl not found (use --no-kubectl)" >&2; exit 1; }
fi
if [[ -z $out ]]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

cn="$service.$ns.svc"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
    -keyout "$out/ca.key" -out "$out/ca.crt" -subj "/CN=chaos-injector-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$out/tls.key" -out "$out/tls.csr" \
    -subj "/CN=$cn" 2>/dev/null
cat > "$out/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$service,DNS:$service.$ns,DNS:$cn,DNS:$cn.cluster.local
EXT
openssl x509 -req -sha256 -days "$days" -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -out "$out/tls.crt" -extfile "$out/ext.cnf" 2>/dev/null
rm -f "$out/tls.csr" "$out/ext.cnf" "$out/ca.srl"
chmod 600 "$out/tls.key" "$out/ca.key"
ca_bundle=$(base64 -w0 < "$out/ca.crt")

for patch_file in "${patch_files[@]}"; do
    # insert/replace `caBundle:` right under `clientConfig:` of every webhook in the file
    tmp=$(mktemp)
    awk -v ca="$ca_bundle" '
        /^[[:space:]]*caBundle:/ { next }
        { print }
        /^[[:space:]]*clientConfig:[[:space:]]*$/ {
            match($0, /^[[:space:]]*/); printf "%*scaBundle: %s\n", RLENGTH + 2, "", ca
        }' "$patch_file" > "$tmp"
    cat "$tmp" > "$patch_file" && rm -f "$tmp"
done

if ((use_kubectl)); then
    kubectl create secret tls "$secret" -n "$ns" --cert="$out/tls.crt" --key="$out/tls.key" \
        --dry-run=client -o yaml | kubectl apply -f -
    # the pod injector (mutating) and the IoChaos check (validating) share the Service
    for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
        if ! names=$(kubectl get "$kind" "$webhook" -o jsonpath='{.webhooks[*].name}' 2>/dev/null); then
            echo "gen-certs.sh: no $kind $webhook, skipped" >&2
            continue
        fi
        count=$(wc -w <<<"$names")
        for ((i = 0; i < count; i++)); do
            kubectl patch "$kind" "$webhook" --type=json \
                -p "[{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}]"
        done
    done
fi
echo "gen-certs.sh: certificate for $cn written${out:+ to $out}" >&2
