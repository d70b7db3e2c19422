#!/usr/bin/env bash
# Idempotent bootstrap of an Amazon Linux 2023 parent instance for the AgentKeys broker.
#
# Installs the Nitro Enclaves CLI and the allocator configuration, creates the system
# user `agentkeys`, writes /etc/agentkeys/broker.env, the vsock-proxy allowlist and the
# hardened systemd units for vsock-proxy, the enclave and the broker. Running it again
# with the same answers changes nothing.
#
# Interactive on a terminal (each choice explained); otherwise:
#   sudo scripts/setup-parent-host.sh --non-interactive \
#       --issuer https://issuer.example.com --region us-east-1 \
#       --kms-key-id arn:aws:kms:us-east-1:111122223333:key/<uuid> \
#       --backend-url https://backend.example.com \
#       (--tls-cert /etc/agentkeys/tls/cert.pem --tls-key /etc/agentkeys/tls/key.pem | --behind-tls-proxy) \
#       [--credential-mode web-identity|assume-role] [--role-arn ARN] \
#       [--data-dir /var/lib/agentkeys] [--bind 0.0.0.0:443] \
#       [--enclave-memory-mib 512] [--enclave-cpus 2] [--enclave-cid 16] \
#       [--eif-path /opt/agentkeys/agentkeys-enclave.eif] [--kms-proxy-port 8001] \
#       [--acme-directory https://acme-v02.api.letsencrypt.org/directory \
#        [--acme-proxy-port 8002] [--issuer-listen 0.0.0.0:443]] \
#       [--dry-run]
#
# --acme-directory (the same URL the image was built with, build-eif.sh --acme-directory)
# adds the CA's host to the vsock-proxy allowlist and a second proxy unit,
# agentkeys-vsock-proxy-acme (vsock port 8002 -> the CA host's 443), through which the
# enclave's own ACME client reaches the CA over TLS that ends inside the enclave. The
# broker then relays the issuer hostname's connections, unread, from --issuer-listen
# (default 0.0.0.0:443) to the enclave's TLS on vsock port 5001, and the mint API moves
# off port 443 (--bind defaults to 0.0.0.0:8443).
#
# --dry-run prints every action (commands and file contents) without doing any of them.
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR="$(cd "$SCRIPT_DIR" && pwd)"
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

usage() {
    sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

NON_INTERACTIVE=0
DRY_RUN=0
ISSUER=""
REGION=""
KMS_KEY_ID=""
BACKEND_URL=""
CREDENTIAL_MODE=""
ROLE_ARN=""
DATA_DIR=""
BIND=""
TLS_CERT=""
TLS_KEY=""
BEHIND_TLS_PROXY=""
ENCLAVE_MEMORY_MIB=""
ENCLAVE_CPUS=""
ENCLAVE_CID=""
EIF_PATH=""
KMS_PROXY_PORT=""
ACME_DIRECTORY=""
ACME_PROXY_PORT=""
ISSUER_LISTEN=""

while [ $# -gt 0 ]; do
    case "$1" in
        --non-interactive) NON_INTERACTIVE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --issuer) ISSUER="${2?--issuer needs a value}"; shift 2 ;;
        --region) REGION="${2?--region needs a value}"; shift 2 ;;
        --kms-key-id) KMS_KEY_ID="${2?--kms-key-id needs a value}"; shift 2 ;;
        --backend-url) BACKEND_URL="${2?--backend-url needs a value}"; shift 2 ;;
        --credential-mode) CREDENTIAL_MODE="${2?--credential-mode needs a value}"; shift 2 ;;
        --role-arn) ROLE_ARN="${2?--role-arn needs a value}"; shift 2 ;;
        --data-dir) DATA_DIR="${2?--data-dir needs a value}"; shift 2 ;;
        --bind) BIND="${2?--bind needs a value}"; shift 2 ;;
        --tls-cert) TLS_CERT="${2?--tls-cert needs a value}"; shift 2 ;;
        --tls-key) TLS_KEY="${2?--tls-key needs a value}"; shift 2 ;;
        --behind-tls-proxy) BEHIND_TLS_PROXY=1; shift ;;
        --enclave-memory-mib) ENCLAVE_MEMORY_MIB="${2?--enclave-memory-mib needs a value}"; shift 2 ;;
        --enclave-cpus) ENCLAVE_CPUS="${2?--enclave-cpus needs a value}"; shift 2 ;;
        --enclave-cid) ENCLAVE_CID="${2?--enclave-cid needs a value}"; shift 2 ;;
        --eif-path) EIF_PATH="${2?--eif-path needs a value}"; shift 2 ;;
        --kms-proxy-port) KMS_PROXY_PORT="${2?--kms-proxy-port needs a value}"; shift 2 ;;
        --acme-directory) ACME_DIRECTORY="${2?--acme-directory needs a value}"; shift 2 ;;
        --acme-proxy-port) ACME_PROXY_PORT="${2?--acme-proxy-port needs a value}"; shift 2 ;;
        --issuer-listen) ISSUER_LISTEN="${2?--issuer-listen needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# ---- the issuer is checked before anything else ------------------------------------------
if [ -n "$ISSUER" ]; then
    if ! reason="$(validate_issuer "$ISSUER")"; then
        die "--issuer: $reason"
    fi
fi

INTERACTIVE=0
if [ "$NON_INTERACTIVE" = 0 ]; then
    if [ -t 0 ] && [ -t 1 ]; then
        INTERACTIVE=1
    else
        die "no terminal to ask questions on: pass --non-interactive with the flags (see --help)"
    fi
fi

# ask VAR "explanation" default: interactive prompt when VAR is empty.
ask() {
    local var="$1" explanation="$2" default="${3:-}" answer
    [ "$INTERACTIVE" = 1 ] || return 0
    [ -z "${!var}" ] || return 0
    printf '\n%s\n' "$explanation" >&2
    if [ -n "$default" ]; then
        read -r -p "> [$default] " answer
        answer="${answer:-$default}"
    else
        read -r -p "> " answer
    fi
    printf -v "$var" '%s' "$answer"
}

ask ISSUER "Issuer URL: the exact 'iss' of every token and the URL IAM registers as the OIDC provider. https://host[/path], no trailing slash, no query, no port. It is also baked into the enclave image (PCR0)."
if [ -n "$ISSUER" ] && ! reason="$(validate_issuer "$ISSUER")"; then
    die "--issuer: $reason"
fi
ask REGION "AWS region of the KMS key (the enclave reaches only kms.<region>.amazonaws.com through vsock-proxy)." "us-east-1"
ask KMS_KEY_ID "KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID) that seals the issuer seed: the same ARN the enclave image was built with (build-eif.sh --kms-key-arn). Its key policy must come from 'agentkeys-broker kms-policy'."
ask BACKEND_URL "Session backend base URL: the broker validates bearers with GET <url>/session/validate."
ask CREDENTIAL_MODE "How /v1/mint-aws-creds gets credentials: 'web-identity' (AssumeRoleWithWebIdentity with the enclave-signed JWT; the parent needs no AWS credentials for it) or 'assume-role' (the parent's own credentials, the older mode)." "web-identity"
ask ROLE_ARN "Role agents receive credentials for (BROKER_DATA_ROLE_ARN). Empty: the broker's default (agentkeys-data-role in this account)." ""
ask DATA_DIR "Data directory for the audit database and the sealed seed (owned by the agentkeys user, mode 0700)." "/var/lib/agentkeys"
if [ -n "$ACME_DIRECTORY" ]; then
    # The issuer hostname takes port 443 (the relay to the enclave's TLS).
    ask BIND "Address the mint API listens on. The issuer hostname's relay takes port 443 (--issuer-listen), so the mint API needs another port or address." "0.0.0.0:8443"
else
    ask BIND "Address the broker listens on. IAM fetches the discovery document and the JWKS from the issuer over HTTPS on port 443." "0.0.0.0:443"
fi
if [ "$INTERACTIVE" = 1 ] && [ -z "$TLS_CERT" ] && [ -z "$BEHIND_TLS_PROXY" ]; then
    printf '\n%s\n' "TLS: either the broker serves HTTPS itself (give a certificate chain and key in PEM), or a TLS-terminating proxy/load balancer is in front. Answer 'cert' or 'proxy'." >&2
    read -r -p "> [cert] " tls_choice
    case "${tls_choice:-cert}" in
        proxy) BEHIND_TLS_PROXY=1 ;;
        cert)
            ask TLS_CERT "TLS certificate chain (PEM) path." "/etc/agentkeys/tls/fullchain.pem"
            ask TLS_KEY "TLS private key (PEM) path, readable by the agentkeys user." "/etc/agentkeys/tls/privkey.pem" ;;
        *) die "TLS choice must be 'cert' or 'proxy'" ;;
    esac
fi
ask ENCLAVE_MEMORY_MIB "Memory reserved for the enclave in MiB (allocator memory_mib; the EIF must fit with room to spare)." "512"
ask ENCLAVE_CPUS "vCPUs reserved for the enclave (allocator cpu_count; whole cores, so even on hyper-threaded instances; the parent keeps the rest)." "2"

# ---- defaults and validation -----------------------------------------------------------------
CREDENTIAL_MODE="${CREDENTIAL_MODE:-web-identity}"
DATA_DIR="${DATA_DIR:-/var/lib/agentkeys}"
if [ -n "$ACME_DIRECTORY" ]; then
    BIND="${BIND:-0.0.0.0:8443}"
    # IAM fetches the issuer's documents on port 443 (iam-oidc refuses an issuer with a port).
    ISSUER_LISTEN="${ISSUER_LISTEN:-0.0.0.0:443}"
else
    BIND="${BIND:-0.0.0.0:443}"
fi
ENCLAVE_MEMORY_MIB="${ENCLAVE_MEMORY_MIB:-512}"
ENCLAVE_CPUS="${ENCLAVE_CPUS:-2}"
ENCLAVE_CID="${ENCLAVE_CID:-16}"
EIF_PATH="${EIF_PATH:-/opt/agentkeys/agentkeys-enclave.eif}"
KMS_PROXY_PORT="${KMS_PROXY_PORT:-8001}"
# The vsock port the image's command line gives the enclave's issuer TLS
# (--tls-vsock-port, eif/Dockerfile).
ENCLAVE_TLS_PORT=5001
# The enclave's default --acme-proxy-port (enclave/src/tls/transport.rs).
ACME_PROXY_PORT="${ACME_PROXY_PORT:-8002}"

[ -n "$ISSUER" ] || die "--issuer is required"
[ -n "$REGION" ] || die "--region is required"
[ -n "$KMS_KEY_ID" ] || die "--kms-key-id is required"
[ -n "$BACKEND_URL" ] || die "--backend-url is required"

[[ "$REGION" =~ ^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$ ]] || die "--region '$REGION' is not an AWS region name (e.g. us-east-1)"
# The enclave image pins one key by its full ARN (an alias can be re-pointed), and the
# broker's --kms-key-id must be that ARN.
if ! reason="$(validate_kms_key_arn "$KMS_KEY_ID")"; then
    die "--kms-key-id $reason"
fi
key_region="$(printf '%s' "$KMS_KEY_ID" | cut -d: -f4)"
[ "$key_region" = "$REGION" ] || die "--kms-key-id is in region '$key_region' but --region is '$REGION'"
[[ "$BACKEND_URL" =~ ^https?://[^[:space:]/?#]+(/[^[:space:]?#]*)?$ ]] || die "--backend-url '$BACKEND_URL' must be an http(s) URL without query"
case "$CREDENTIAL_MODE" in
    web-identity|assume-role) ;;
    *) die "--credential-mode '$CREDENTIAL_MODE' is unknown: use web-identity or assume-role" ;;
esac
if [ -n "$ROLE_ARN" ] && ! [[ "$ROLE_ARN" =~ ^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$ ]]; then
    die "--role-arn '$ROLE_ARN' is not an IAM role ARN"
fi
case "$DATA_DIR" in
    /*) ;;
    *) die "--data-dir '$DATA_DIR' must be an absolute path" ;;
esac
case "$DATA_DIR" in
    *[[:space:]]*|*..*) die "--data-dir '$DATA_DIR' must not contain spaces or '..'" ;;
esac
[[ "$BIND" =~ ^([0-9.]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})$ ]] || die "--bind '$BIND' must be IP:PORT (e.g. 0.0.0.0:443)"
BIND_ADDR="${BASH_REMATCH[1]}"
BIND_PORT="${BASH_REMATCH[2]}"
uint_in_range "$BIND_PORT" 1 65535 || die "--bind port must be 1..65535"
if [ -n "$TLS_CERT" ] || [ -n "$TLS_KEY" ]; then
    [ -z "$BEHIND_TLS_PROXY" ] || die "choose either --tls-cert/--tls-key or --behind-tls-proxy, not both"
    if [ -z "$TLS_CERT" ] || [ -z "$TLS_KEY" ]; then
        die "--tls-cert and --tls-key go together"
    fi
elif [ -z "$BEHIND_TLS_PROXY" ]; then
    die "TLS is required for an https issuer: pass --tls-cert and --tls-key, or --behind-tls-proxy"
fi
uint_in_range "$ENCLAVE_MEMORY_MIB" 64 4194304 || die "--enclave-memory-mib must be a number >= 64"
uint_in_range "$ENCLAVE_CPUS" 1 1024 || die "--enclave-cpus must be a positive number"
uint_in_range "$ENCLAVE_CID" 4 4294967294 || die "--enclave-cid must be 4..4294967294"
uint_in_range "$KMS_PROXY_PORT" 1024 65535 || die "--kms-proxy-port must be 1024..65535"
[ "$KMS_PROXY_PORT" != 8000 ] || warn "--kms-proxy-port 8000 is the stock nitro-enclaves-vsock-proxy port; do not run both"
ACME_HOST=""
ACME_ALLOWLIST_ENTRY="# (no ACME CA: the enclave terminates no issuer TLS)"
if [ -n "$ACME_DIRECTORY" ]; then
    if ! reason="$(validate_acme_directory "$ACME_DIRECTORY")"; then
        die "--acme-directory: $reason"
    fi
    ACME_HOST="$(acme_directory_host "$ACME_DIRECTORY")"
    ACME_ALLOWLIST_ENTRY="- {address: $ACME_HOST, port: 443}"
    uint_in_range "$ACME_PROXY_PORT" 1024 65535 || die "--acme-proxy-port must be 1024..65535"
    [ "$ACME_PROXY_PORT" != "$KMS_PROXY_PORT" ] || die "--acme-proxy-port must differ from --kms-proxy-port ($KMS_PROXY_PORT)"
    [[ "$ISSUER_LISTEN" =~ ^([0-9.]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})$ ]] || die "--issuer-listen '$ISSUER_LISTEN' must be IP:PORT (e.g. 0.0.0.0:443)"
    ISSUER_LISTEN_ADDR="${BASH_REMATCH[1]}"
    ISSUER_LISTEN_PORT="${BASH_REMATCH[2]}"
    uint_in_range "$ISSUER_LISTEN_PORT" 1 65535 || die "--issuer-listen port must be 1..65535"
    if [ "$ISSUER_LISTEN_PORT" = "$BIND_PORT" ]; then
        case "$ISSUER_LISTEN_ADDR|$BIND_ADDR" in
            "$BIND_ADDR|$BIND_ADDR"|0.0.0.0\|*|*\|0.0.0.0|\[::\]\|*|*\|\[::\])
                die "--issuer-listen $ISSUER_LISTEN and --bind $BIND both take port $BIND_PORT: the issuer hostname's relay and the mint API need different ports (or different addresses of the instance)" ;;
        esac
    fi
    [ "$ISSUER_LISTEN_PORT" = 443 ] || warn "--issuer-listen port $ISSUER_LISTEN_PORT: AWS STS fetches the issuer's documents on port 443, so forward 443 to it"
elif [ -n "$ISSUER_LISTEN" ]; then
    die "--issuer-listen needs --acme-directory: without it the enclave terminates no issuer TLS to relay to"
fi
case "$EIF_PATH" in
    /*) ;;
    *) die "--eif-path must be an absolute path" ;;
esac

# ---- actions -------------------------------------------------------------------------------
# Every change goes through run/write_file/install_file so that --dry-run shows it all.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '[dry-run] %s\n' "$*"
    else
        info "$*"
        "$@"
    fi
}

# write_file PATH MODE OWNER:GROUP < content — only when the content differs.
write_file() {
    local path="$1" mode="$2" owner="$3" content
    content="$(cat)"
    if [ "$DRY_RUN" = 1 ]; then
        printf '[dry-run] write %s (mode %s, owner %s):\n' "$path" "$mode" "$owner"
        printf '%s\n' "$content" | sed 's/^/    | /'
        return 0
    fi
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        info "unchanged: $path"
    else
        info "writing $path"
        mkdir -p "$(dirname "$path")"
        printf '%s\n' "$content" >"$path.agentkeys-new"
        mv "$path.agentkeys-new" "$path"
    fi
    chmod "$mode" "$path"
    chown "$owner" "$path"
}

# render TEMPLATE: substitute @VARS@ in a template file.
render() {
    sed -e "s|@REGION@|$REGION|g" \
        -e "s|@KMS_PROXY_PORT@|$KMS_PROXY_PORT|g" \
        -e "s|@ACME_HOST@|$ACME_HOST|g" \
        -e "s|@ACME_PROXY_PORT@|$ACME_PROXY_PORT|g" \
        -e "s|@ACME_ALLOWLIST_ENTRY@|$ACME_ALLOWLIST_ENTRY|g" \
        -e "s|@EIF_PATH@|$EIF_PATH|g" \
        -e "s|@ENCLAVE_CPUS@|$ENCLAVE_CPUS|g" \
        -e "s|@ENCLAVE_MEMORY_MIB@|$ENCLAVE_MEMORY_MIB|g" \
        -e "s|@ENCLAVE_CID@|$ENCLAVE_CID|g" \
        -e "s|@DATA_DIR@|$DATA_DIR|g" \
        -e "s|@CAPABILITIES@|$CAPABILITIES|g" \
        "$1"
}

# Binding a port below 1024 (the mint API's or the issuer relay's) needs
# CAP_NET_BIND_SERVICE; nothing else needs a capability.
CAPABILITIES=""
if [ "$BIND_PORT" -lt 1024 ] || { [ -n "$ISSUER_LISTEN" ] && [ "$ISSUER_LISTEN_PORT" -lt 1024 ]; }; then
    CAPABILITIES="CAP_NET_BIND_SERVICE"
fi

if [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
    die "run as root (sudo), or add --dry-run to see the plan"
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    os_id="$(. /etc/os-release && printf '%s %s' "${ID:-}" "${VERSION_ID:-}")"
else
    os_id="unknown"
fi
if [ "$os_id" != "amzn 2023" ]; then
    if [ "$DRY_RUN" = 1 ]; then
        warn "this host is '$os_id', not Amazon Linux 2023 (fine for a dry run)"
    else
        die "this script supports Amazon Linux 2023 only (found '$os_id')"
    fi
fi

cat <<PLAN
AgentKeys parent host plan
  issuer             $ISSUER
  region / KMS key   $REGION / $KMS_KEY_ID
  backend            $BACKEND_URL
  credential mode    $CREDENTIAL_MODE${ROLE_ARN:+ (role $ROLE_ARN)}
  data dir           $DATA_DIR
  bind               $BIND
  TLS                ${BEHIND_TLS_PROXY:+behind a TLS proxy}${TLS_CERT:+cert $TLS_CERT, key $TLS_KEY}
  enclave            $ENCLAVE_CPUS vCPU, $ENCLAVE_MEMORY_MIB MiB, CID $ENCLAVE_CID, EIF $EIF_PATH
  vsock-proxy        port $KMS_PROXY_PORT -> kms.$REGION.amazonaws.com:443${ACME_HOST:+
  vsock-proxy (ACME) port $ACME_PROXY_PORT -> $ACME_HOST:443
  issuer relay       $ISSUER_LISTEN -> enclave vsock:$ENCLAVE_CID:$ENCLAVE_TLS_PORT (TLS ends in the enclave)}
PLAN

# 1. Packages.
if [ "$DRY_RUN" = 1 ] || ! rpm -q aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel jq >/dev/null 2>&1; then
    run dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel jq
else
    info "unchanged: aws-nitro-enclaves-cli, aws-nitro-enclaves-cli-devel, jq installed"
fi

# 2. Allocator: memory and CPUs reserved for enclaves at boot.
write_file /etc/nitro_enclaves/allocator.yaml 0644 root:root <<YAML
---
# Enclave resources reserved by nitro-enclaves-allocator.service (setup-parent-host.sh).
memory_mib: $ENCLAVE_MEMORY_MIB
cpu_count: $ENCLAVE_CPUS
YAML

# 3. System user, member of `ne` (the group allowed to use /dev/nitro_enclaves).
if [ "$DRY_RUN" = 1 ] || ! id agentkeys >/dev/null 2>&1; then
    run useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /sbin/nologin agentkeys
else
    info "unchanged: user agentkeys exists"
fi
if [ "$DRY_RUN" = 1 ] || ! id -nG agentkeys | tr ' ' '\n' | grep -qx ne; then
    run usermod -a -G ne agentkeys
fi

# 4. Directories.
run install -d -m 0700 -o agentkeys -g agentkeys "$DATA_DIR"
run install -d -m 0750 -o root -g agentkeys /etc/agentkeys
run install -d -m 0755 -o root -g root /usr/local/lib/agentkeys "$(dirname "$EIF_PATH")"
run install -m 0755 -o root -g root "$SCRIPT_DIR/run-enclave.sh" /usr/local/lib/agentkeys/run-enclave.sh
run install -d -m 0755 -o root -g root /usr/local/lib/agentkeys/lib
run install -m 0644 -o root -g root "$SCRIPT_DIR/lib/common.sh" /usr/local/lib/agentkeys/lib/common.sh

# 5. Broker configuration (BROKER_* environment mirrors of `agentkeys-broker serve`).
{
    echo "# AgentKeys broker configuration (setup-parent-host.sh). See docs/deploy-nitro.md."
    echo "BROKER_OIDC_ISSUER=$ISSUER"
    echo "BROKER_BIND=$BIND"
    echo "BROKER_BACKEND_URL=$BACKEND_URL"
    echo "BROKER_ENCLAVE_ADDR=vsock:$ENCLAVE_CID:5000"
    echo "BROKER_KMS_KEY_ID=$KMS_KEY_ID"
    echo "BROKER_KMS_REGION=$REGION"
    echo "BROKER_STS_REGION=$REGION"
    echo "BROKER_STS_MODE=$CREDENTIAL_MODE"
    echo "BROKER_AUDIT_DB=$DATA_DIR/audit.db"
    echo "BROKER_SEALED_SEED_PATH=$DATA_DIR/sealed-seed.bin"
    if [ -n "$ROLE_ARN" ]; then echo "BROKER_DATA_ROLE_ARN=$ROLE_ARN"; fi
    if [ -n "$TLS_CERT" ]; then
        echo "BROKER_TLS_CERT=$TLS_CERT"
        echo "BROKER_TLS_KEY=$TLS_KEY"
    fi
    if [ -n "$BEHIND_TLS_PROXY" ]; then echo "BROKER_BEHIND_TLS_PROXY=true"; fi
    if [ -n "$ISSUER_LISTEN" ]; then
        echo "BROKER_ISSUER_LISTEN=$ISSUER_LISTEN"
        echo "BROKER_ENCLAVE_TLS=vsock:$ENCLAVE_CID:$ENCLAVE_TLS_PORT"
    fi
} | write_file /etc/agentkeys/broker.env 0640 root:agentkeys

if [ -n "$TLS_CERT" ] && [ "$DRY_RUN" = 0 ]; then
    [ -r "$TLS_CERT" ] || warn "TLS certificate $TLS_CERT does not exist yet: the broker will not start until it does"
    [ -r "$TLS_KEY" ] || warn "TLS key $TLS_KEY does not exist yet: the broker will not start until it does"
fi

# 6. vsock-proxy allowlist and units.
render "$SCRIPT_DIR/vsock-proxy/agentkeys-vsock-proxy.yaml.template" |
    write_file /etc/nitro_enclaves/agentkeys-vsock-proxy.yaml 0644 root:root
units=(agentkeys-vsock-proxy agentkeys-enclave agentkeys-broker)
if [ -n "$ACME_HOST" ]; then
    units+=(agentkeys-vsock-proxy-acme)
fi
for unit in "${units[@]}"; do
    render "$SCRIPT_DIR/systemd/$unit.service" | write_file "/etc/systemd/system/$unit.service" 0644 root:root
done

# 7. Services. The allocator reserves memory/CPUs now; our units are enabled, and started
#    only when their inputs exist.
run systemctl daemon-reload
run systemctl enable --now nitro-enclaves-allocator.service
run systemctl restart nitro-enclaves-allocator.service
run systemctl enable --now agentkeys-vsock-proxy.service
if [ -n "$ACME_HOST" ]; then
    run systemctl enable --now agentkeys-vsock-proxy-acme.service
fi
run systemctl enable agentkeys-enclave.service agentkeys-broker.service
if [ "$DRY_RUN" = 0 ]; then
    if [ -r "$EIF_PATH" ] && [ -x /usr/local/bin/agentkeys-broker ]; then
        run systemctl restart agentkeys-enclave.service agentkeys-broker.service
    else
        info "not started yet: install $EIF_PATH (scripts/build-eif.sh) and /usr/local/bin/agentkeys-broker, then: systemctl start agentkeys-enclave agentkeys-broker"
    fi
else
    printf '[dry-run] start agentkeys-enclave and agentkeys-broker once %s and /usr/local/bin/agentkeys-broker exist\n' "$EIF_PATH"
fi

cat <<NEXT

Next steps (docs/deploy-nitro.md):
  1. scripts/build-eif.sh --issuer $ISSUER --kms-key-arn $KMS_KEY_ID --session-key-thumbprint <backend key>   then copy the EIF to $EIF_PATH
  2. agentkeys-broker kms-policy --measurements eif/measurements.json --account <id> --parent-role-arn <instance role ARN>
     aws kms put-key-policy --key-id $KMS_KEY_ID --policy-name default --policy file://key-policy.json
  3. agentkeys-broker iam-oidc --issuer $ISSUER --account <id> --role-name agentkeys-data-role
  4. systemctl start agentkeys-enclave agentkeys-broker; curl -fsS $ISSUER/readyz
NEXT
if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: nothing was changed"
fi
