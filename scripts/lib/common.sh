#!/usr/bin/env bash
# Shared helpers for the AgentKeys operator scripts. Sourced, not executed.
# shellcheck shell=bash

# die MESSAGE...: print to stderr and exit 1.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# warn MESSAGE...: print to stderr.
warn() {
    printf 'warning: %s\n' "$*" >&2
}

# info MESSAGE...: progress on stderr (stdout stays machine-readable where it matters).
info() {
    printf '==> %s\n' "$*" >&2
}

# need_tool NAME HINT: fail with HINT when NAME is not on PATH.
need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH. $2"
}

# validate_kms_key_arn ARN: the one KMS key an enclave image is pinned to, as the enclave
# itself parses it (agentkeys_wire::KmsKeyArn): arn:aws[-cn|-us-gov]:kms:REGION:ACCOUNT:
# key/KEY-ID with a UUID or mrk- key id; aliases and bare key ids are refused because an
# alias can be re-pointed. Prints the reason and returns 1 when invalid.
validate_kms_key_arn() {
    local uuid='[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
    if [[ "$1" =~ ^arn:aws(-cn|-us-gov)?:kms:[a-z]{2}(-[a-z]+)+-[0-9]{1,2}:[0-9]{12}:key/(mrk-[0-9a-f]{32}|$uuid)$ ]]; then
        return 0
    fi
    echo "'$1' is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID): the enclave image is pinned to one key ARN, never an alias or a bare key id"
    return 1
}

# validate_issuer URL: the issuer is the exact `iss` of every token and IAM's provider
# URL: https://host[/path], no trailing slash, no query, no fragment, no port.
# Prints the reason and returns 1 when invalid.
validate_issuer() {
    local issuer="$1" rest host
    case "$issuer" in
        "") echo "issuer is empty"; return 1 ;;
        https://*) ;;
        *) echo "issuer '$issuer' must start with https:// (IAM only accepts https issuers)"; return 1 ;;
    esac
    rest="${issuer#https://}"
    [ -n "$rest" ] || { echo "issuer '$issuer' has no host"; return 1; }
    case "$issuer" in
        */) echo "issuer '$issuer' must not end with a trailing slash (tokens carry the exact iss)"; return 1 ;;
    esac
    case "$issuer" in
        *\?*) echo "issuer '$issuer' must not contain a query (?)"; return 1 ;;
        *\#*) echo "issuer '$issuer' must not contain a fragment (#)"; return 1 ;;
        *@*) echo "issuer '$issuer' must not contain user info (@)"; return 1 ;;
        *[[:space:]]*) echo "issuer '$issuer' must not contain spaces"; return 1 ;;
    esac
    case "$rest" in
        *//*) echo "issuer '$issuer' must not contain empty path segments"; return 1 ;;
    esac
    host="${rest%%/*}"
    case "$host" in
        *:*) echo "issuer '$issuer' must not contain a port (IAM OIDC providers cannot have one)"; return 1 ;;
    esac
    if ! [[ "$host" =~ ^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]; then
        echo "issuer '$issuer' host '$host' is not a DNS name"
        return 1
    fi
    return 0
}

# is_uint VALUE: true for a non-empty string of digits.
is_uint() {
    [[ "$1" =~ ^[0-9]+$ ]]
}

# uint_in_range VALUE MIN MAX: true when VALUE is 1-10 digits and MIN <= VALUE <= MAX.
uint_in_range() {
    [[ "$1" =~ ^[0-9]{1,10}$ ]] || return 1
    [ $((10#$1)) -ge "$2" ] && [ $((10#$1)) -le "$3" ]
}
