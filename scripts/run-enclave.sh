#!/usr/bin/env bash
# Starts the AgentKeys enclave with nitro-cli and waits until it runs (and, with
# --ready-url, until the broker reports it unsealed).
#
# Usage:
#   scripts/run-enclave.sh [--eif eif/agentkeys-enclave.eif] [--cpu-count 2]
#       [--memory 512] [--enclave-cid 16] [--enclave-name agentkeys]
#       [--timeout 120] [--ready-url http://127.0.0.1:8091] [--replace]
#       [--debug-mode --i-understand-debug-mode] [--dry-run]
#
# The CID must match the broker's BROKER_ENCLAVE_ADDR (vsock:16:5000 by default); the
# vsock port (5000) and the KMS proxy port (8001) are baked into the image.
# Debug mode is refused unless --i-understand-debug-mode is given too: a debug enclave
# reports PCR0/1/2/8 as zeros, so a KMS key policy pinned to PCR0 denies it (the seed
# cannot be unsealed) and no auditor will accept its attestation.
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR="$(cd "$SCRIPT_DIR" && pwd)"
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

EIF="$SCRIPT_DIR/../eif/agentkeys-enclave.eif"
CPU_COUNT=2
MEMORY_MIB=512
CID=16
NAME=agentkeys
TIMEOUT=120
READY_URL=""
REPLACE=0
DEBUG=0
DEBUG_ACK=0
DRY_RUN=0

while [ $# -gt 0 ]; do
    case "$1" in
        --eif) EIF="${2:?--eif needs a value}"; shift 2 ;;
        --cpu-count) CPU_COUNT="${2:?--cpu-count needs a value}"; shift 2 ;;
        --memory) MEMORY_MIB="${2:?--memory needs a value}"; shift 2 ;;
        --enclave-cid) CID="${2:?--enclave-cid needs a value}"; shift 2 ;;
        --enclave-name) NAME="${2:?--enclave-name needs a value}"; shift 2 ;;
        --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
        --ready-url) READY_URL="${2:?--ready-url needs a value}"; shift 2 ;;
        --replace) REPLACE=1; shift ;;
        --debug-mode) DEBUG=1; shift ;;
        --i-understand-debug-mode) DEBUG_ACK=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

uint_in_range "$CPU_COUNT" 1 1024 || die "--cpu-count must be a positive integer"
uint_in_range "$MEMORY_MIB" 64 4194304 || die "--memory must be at least 64 (MiB)"
# CIDs 0-2 are reserved (hypervisor, local, host) and 3 is the parent.
uint_in_range "$CID" 4 4294967294 || die "--enclave-cid must be 4..4294967294"
is_uint "$TIMEOUT" || die "--timeout must be a number of seconds"
[[ "$NAME" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "--enclave-name must be 1-64 of A-Z a-z 0-9 _ . -"

if [ "$DEBUG" = 1 ]; then
    if [ "$DEBUG_ACK" != 1 ]; then
        die "--debug-mode refused: a debug enclave's PCR0/1/2/8 read as zeros, so the KMS key policy (pinned to PCR0) denies it and its attestation proves nothing. Add --i-understand-debug-mode to start it anyway (never in production)."
    fi
    warn "DEBUG MODE: PCR0/1/2/8 are zeros; KMS will deny the unseal under a PCR0-pinned key policy and auditors must reject this enclave's attestation."
fi

run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '[dry-run] %s\n' "$*"
    else
        "$@"
    fi
}

if [ "$DRY_RUN" = 0 ]; then
    need_tool nitro-cli "Install aws-nitro-enclaves-cli (scripts/setup-parent-host.sh does)."
    need_tool jq "Install jq (sudo dnf install -y jq)."
    [ -r "$EIF" ] || die "EIF '$EIF' not found: build it with scripts/build-eif.sh"
fi

existing() {
    nitro-cli describe-enclaves | jq -r --arg n "$NAME" '.[] | select(.EnclaveName == $n) | .EnclaveID'
}

if [ "$DRY_RUN" = 0 ]; then
    old="$(existing)"
    if [ -n "$old" ]; then
        if [ "$REPLACE" = 1 ]; then
            info "terminating the running enclave $NAME ($old)"
            nitro-cli terminate-enclave --enclave-id "$old" >/dev/null
        else
            die "an enclave named $NAME is already running ($old); pass --replace to restart it"
        fi
    fi
fi

args=(run-enclave --eif-path "$EIF" --cpu-count "$CPU_COUNT" --memory "$MEMORY_MIB"
      --enclave-cid "$CID" --enclave-name "$NAME")
if [ "$DEBUG" = 1 ]; then
    args+=(--debug-mode)
fi
info "nitro-cli ${args[*]}"
run nitro-cli "${args[@]}"

if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run] wait until nitro-cli describe-enclaves shows %s RUNNING (%ss)\n' "$NAME" "$TIMEOUT"
    if [ -n "$READY_URL" ]; then
        printf '[dry-run] wait until %s/readyz answers 200\n' "$READY_URL"
    fi
    exit 0
fi

deadline=$((SECONDS + TIMEOUT))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state="$(nitro-cli describe-enclaves | jq -r --arg n "$NAME" '.[] | select(.EnclaveName == $n) | .State')"
    [ "$state" = "RUNNING" ] && break
    sleep 1
done
[ "$state" = "RUNNING" ] || die "enclave $NAME is not RUNNING after ${TIMEOUT}s (state: '${state:-absent}'); see /var/log/nitro_enclaves/"
flags="$(nitro-cli describe-enclaves | jq -r --arg n "$NAME" '.[] | select(.EnclaveName == $n) | .Flags')"
info "enclave $NAME is RUNNING (CID $CID, flags $flags)"
nitro-cli describe-enclaves | jq --arg n "$NAME" '.[] | select(.EnclaveName == $n) | {EnclaveID, EnclaveCID, State, Flags, Measurements}'

# The enclave answers only on vsock. The broker's supervisor sends it the wire `Status`
# request and unseals it; /readyz turns 200 once that has worked, so it is the end-to-end
# check that the enclave answers.
if [ -n "$READY_URL" ]; then
    need_tool curl "Install curl."
    while [ "$SECONDS" -lt "$deadline" ]; do
        if curl -fsS -o /dev/null "$READY_URL/readyz"; then
            info "broker reports ready: the enclave answered and is unsealed"
            exit 0
        fi
        sleep 2
    done
    curl -sS "$READY_URL/readyz" >&2 || true
    die "broker at $READY_URL is not ready after ${TIMEOUT}s (the body above lists the failing checks)"
fi
