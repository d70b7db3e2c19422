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

# validate_acme_directory URL: the ACME (RFC 8555) directory of the CA that certifies the
# issuer's TLS key, measured into the image: https://host[/path] on port 443 (the
# enclave reaches the CA through a vsock-proxy to the host's port 443), no query, fragment,
# user info or spaces, at most 200 characters (the enclave's attested statement limit).
# Prints the reason and returns 1 when invalid.
validate_acme_directory() {
    local url="$1" host
    case "$url" in
        https://*) ;;
        *) echo "ACME directory '$url' must start with https://"; return 1 ;;
    esac
    case "$url" in
        *\?*|*\#*|*@*|*[[:space:]]*) echo "ACME directory '$url' must not contain a query, a fragment, user info or spaces"; return 1 ;;
    esac
    [ "${#url}" -le 200 ] || { echo "ACME directory '$url' is longer than 200 characters"; return 1; }
    host="$(acme_directory_host "$url")"
    case "$host" in
        *:*) echo "ACME directory '$url' must use port 443 (the vsock-proxy forwards to the CA host's port 443)"; return 1 ;;
    esac
    if ! [[ "$host" =~ ^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$ ]] \
        || [[ "$host" =~ ^[0-9.]+$ ]]; then
        echo "ACME directory '$url' host '$host' is not a DNS name"
        return 1
    fi
    return 0
}

# acme_directory_host URL: the host of an ACME directory URL (":443" dropped).
acme_directory_host() {
    local rest="${1#https://}"
    rest="${rest%%/*}"
    printf '%s\n' "${rest%:443}"
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

# ---- the enclave image's build inputs (eif/inputs.env) ----------------------------------

# The keys eif/inputs.env sets, each exactly once. read_eif_inputs sets EIF_<KEY>.
EIF_INPUT_KEYS=(RUST_IMAGE RUST_IMAGE_DIGEST RUST_TOOLCHAIN RUST_TARGET ENCLAVE_RUSTFLAGS APK_PACKAGES SOURCE_DATE_EPOCH)

# The digest eif/inputs.env holds until one is resolved: no image has it (used by the
# scripts that source this file).
# shellcheck disable=SC2034
EIF_PLACEHOLDER_DIGEST="sha256:0000000000000000000000000000000000000000000000000000000000000000"

# read_eif_inputs FILE: reads KEY=VALUE lines (VALUE bare, or in double quotes; no `$`,
# backquote or backslash, so sourcing the file and reading it agree) into EIF_<KEY>.
# Comments and blank lines are skipped. Prints the reason and returns 1 on an unreadable
# file, a malformed line, an unknown or repeated key, or a missing one.
read_eif_inputs() {
    local file="$1" line n=0 key value k seen=" "
    [ -r "$file" ] || { echo "cannot read the build inputs file $file"; return 1; }
    for k in "${EIF_INPUT_KEYS[@]}"; do unset "EIF_$k"; done
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        case "$line" in ''|'#'*) continue ;; esac
        if [[ "$line" =~ ^([A-Z_]+)=\"([^\"\$\`\\]*)\"$ ]] || [[ "$line" =~ ^([A-Z_]+)=([^\"\'\$\`\\[:space:]]*)$ ]]; then
            key="${BASH_REMATCH[1]}"
            value="${BASH_REMATCH[2]}"
        else
            echo "$file:$n: not a KEY=value line (values are bare or in double quotes, without \$, backquotes or backslashes): $line"
            return 1
        fi
        case " ${EIF_INPUT_KEYS[*]} " in
            *" $key "*) ;;
            *) echo "$file:$n: unknown key $key (known: ${EIF_INPUT_KEYS[*]})"; return 1 ;;
        esac
        case "$seen" in
            *" $key "*) echo "$file:$n: $key is set twice"; return 1 ;;
        esac
        seen="$seen$key "
        printf -v "EIF_$key" '%s' "$value"
    done <"$file"
    for k in "${EIF_INPUT_KEYS[@]}"; do
        case "$seen" in
            *" $k "*) ;;
            *) echo "$file: $k is missing"; return 1 ;;
        esac
    done
    return 0
}

# version_at_least A B: true when the dotted version A is at least B (1.95.0 >= 1.85).
version_at_least() {
    local IFS=. i
    local -a a b
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    for i in 0 1 2; do
        if [ "$((10#${a[i]:-0}))" -gt "$((10#${b[i]:-0}))" ]; then return 0; fi
        if [ "$((10#${a[i]:-0}))" -lt "$((10#${b[i]:-0}))" ]; then return 1; fi
    done
    return 0
}

# workspace_rust_version REPO_ROOT: prints `rust-version` of the workspace Cargo.toml.
workspace_rust_version() {
    sed -n 's/^rust-version[[:space:]]*=[[:space:]]*"\([0-9.]*\)".*/\1/p' "$1/Cargo.toml" | head -n 1
}

# validate_eif_inputs REPO_ROOT: checks the EIF_<KEY> values read_eif_inputs set (formats,
# and the toolchain against the image tag and the workspace's rust-version). Prints the
# first problem and returns 1. The placeholder digest passes here; building refuses it.
validate_eif_inputs() {
    local msrv pkg
    [[ "$EIF_RUST_IMAGE" =~ ^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9][A-Za-z0-9._-]*$ ]] \
        || { echo "RUST_IMAGE '$EIF_RUST_IMAGE' is not an image name with a tag (name:tag, no digest)"; return 1; }
    [[ "$EIF_RUST_IMAGE_DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]] \
        || { echo "RUST_IMAGE_DIGEST '$EIF_RUST_IMAGE_DIGEST' is not sha256:<64 lower-case hex>"; return 1; }
    [[ "$EIF_RUST_TOOLCHAIN" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
        || { echo "RUST_TOOLCHAIN '$EIF_RUST_TOOLCHAIN' is not an exact version (e.g. 1.95.0)"; return 1; }
    case ":${EIF_RUST_IMAGE#*:}" in
        ":$EIF_RUST_TOOLCHAIN" | ":$EIF_RUST_TOOLCHAIN"-*) ;;
        *) echo "RUST_IMAGE '$EIF_RUST_IMAGE' does not name toolchain $EIF_RUST_TOOLCHAIN (its tag must start with RUST_TOOLCHAIN)"; return 1 ;;
    esac
    msrv="$(workspace_rust_version "$1")"
    if [ -n "$msrv" ] && ! version_at_least "$EIF_RUST_TOOLCHAIN" "$msrv"; then
        echo "RUST_TOOLCHAIN $EIF_RUST_TOOLCHAIN is older than the workspace's rust-version $msrv (Cargo.toml)"
        return 1
    fi
    [[ "$EIF_RUST_TARGET" =~ ^[a-z0-9_]+(-[a-z0-9_]+){2,3}$ ]] \
        || { echo "RUST_TARGET '$EIF_RUST_TARGET' is not a target triple"; return 1; }
    [ -n "$EIF_ENCLAVE_RUSTFLAGS" ] || { echo "ENCLAVE_RUSTFLAGS is empty"; return 1; }
    for pkg in $EIF_APK_PACKAGES; do
        [[ "$pkg" =~ ^[a-z0-9][a-z0-9._+-]*=[0-9][A-Za-z0-9._+-]*$ ]] \
            || { echo "APK_PACKAGES entry '$pkg' is not name=exact-version"; return 1; }
    done
    [[ "$EIF_SOURCE_DATE_EPOCH" =~ ^[0-9]{1,12}$ ]] \
        || { echo "SOURCE_DATE_EPOCH '$EIF_SOURCE_DATE_EPOCH' is not a number of seconds"; return 1; }
    return 0
}

# validate_auth_modes MODES KEYS: the enclave's --auth-mode list and its session key
# thumbprints (both comma-separated) as agentkeys-enclave accepts them; prints the reason
# and fails otherwise.
validate_auth_modes() {
    local modes="$1" keys="$2" mode key signed_session=0 vouched=0 count=0
    [ -n "$modes" ] || { echo "--auth-mode is empty"; return 1; }
    IFS=',' read -r -a list <<<"$modes"
    for mode in "${list[@]}"; do
        case "$mode" in
            signed-session) signed_session=1 ;;
            wallet-signature) ;;
            parent-vouched) vouched=1 ;;
            *) echo "--auth-mode '$mode' is not signed-session, wallet-signature or parent-vouched"; return 1 ;;
        esac
    done
    if [ "$vouched" = 1 ] && [ "${#list[@]}" -gt 1 ]; then
        echo "--auth-mode parent-vouched cannot be combined with another mode: the parent could skip the proof"
        return 1
    fi
    if [ -n "$keys" ]; then
        IFS=',' read -r -a klist <<<"$keys"
        for key in "${klist[@]}"; do
            [[ "$key" =~ ^[A-Za-z0-9_-]{43}$ ]] || { echo "--session-key-thumbprint '$key' is not a 43-character base64url RFC 7638 thumbprint"; return 1; }
            count=$((count + 1))
        done
        [ "$count" -le 4 ] || { echo "at most 4 --session-key-thumbprint values"; return 1; }
    fi
    if [ "$signed_session" = 1 ] && [ "$count" = 0 ]; then
        echo "--auth-mode signed-session needs --session-key-thumbprint (the session backend's ES256 key)"
        return 1
    fi
    if [ "$signed_session" = 0 ] && [ "$count" -gt 0 ]; then
        echo "--session-key-thumbprint is only used with --auth-mode signed-session"
        return 1
    fi
}
