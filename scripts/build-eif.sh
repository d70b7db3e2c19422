#!/usr/bin/env bash
# Builds the reproducible enclave image (eif/Dockerfile) and turns it into an EIF with
# `nitro-cli build-enclave`; writes nitro-cli's measurements JSON and prints the PCRs.
#
# Usage:
#   scripts/build-eif.sh --issuer https://issuer.example.com \
#       --kms-key-arn arn:aws:kms:<region>:<account>:key/<key id> \
#       --rust-image-digest sha256:<64 hex> \
#       [--rust-image rust:1.95-alpine] [--output eif/agentkeys-enclave.eif] \
#       [--measurements eif/measurements.json] [--tag agentkeys-enclave:<rev>] \
#       [--source-date-epoch N] [--apk-packages "musl-dev=<ver>"] \
#       [--signing-certificate cert.pem --private-key key.pem]
#
# The base image must be pinned by digest (RUST_IMAGE_DIGEST may be set instead of the
# flag); an unpinned base image is refused. Run on an x86_64 host with Docker and
# aws-nitro-enclaves-cli (the parent instance, or any build host with nitro-cli).
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR="$(cd "$SCRIPT_DIR" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

ISSUER=""
KMS_KEY_ARN=""
RUST_IMAGE="rust:1.95-alpine"
RUST_IMAGE_DIGEST="${RUST_IMAGE_DIGEST:-}"
OUTPUT="$REPO_ROOT/eif/agentkeys-enclave.eif"
MEASUREMENTS="$REPO_ROOT/eif/measurements.json"
TAG=""
SOURCE_DATE_EPOCH_ARG=""
APK_PACKAGES=""
SIGNING_CERT=""
PRIVATE_KEY=""

while [ $# -gt 0 ]; do
    case "$1" in
        --issuer) ISSUER="${2:?--issuer needs a value}"; shift 2 ;;
        --kms-key-arn) KMS_KEY_ARN="${2:?--kms-key-arn needs a value}"; shift 2 ;;
        --rust-image) RUST_IMAGE="${2:?--rust-image needs a value}"; shift 2 ;;
        --rust-image-digest) RUST_IMAGE_DIGEST="${2:?--rust-image-digest needs a value}"; shift 2 ;;
        --output) OUTPUT="${2:?--output needs a value}"; shift 2 ;;
        --measurements) MEASUREMENTS="${2:?--measurements needs a value}"; shift 2 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
        --source-date-epoch) SOURCE_DATE_EPOCH_ARG="${2:?--source-date-epoch needs a value}"; shift 2 ;;
        --apk-packages) APK_PACKAGES="${2:?--apk-packages needs a value}"; shift 2 ;;
        --signing-certificate) SIGNING_CERT="${2:?--signing-certificate needs a value}"; shift 2 ;;
        --private-key) PRIVATE_KEY="${2:?--private-key needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# ---- inputs first: nothing is built from a bad configuration ----------------------------
[ -n "$ISSUER" ] || die "--issuer is required (it is baked into the image and covered by PCR0)"
if ! reason="$(validate_issuer "$ISSUER")"; then
    die "$reason"
fi
[ -n "$KMS_KEY_ARN" ] || die "--kms-key-arn is required (the one KMS key the enclave unseals with; baked into the image and covered by PCR0)"
if ! reason="$(validate_kms_key_arn "$KMS_KEY_ARN")"; then
    die "--kms-key-arn $reason"
fi
[ -n "$RUST_IMAGE_DIGEST" ] || die "the base image must be pinned: pass --rust-image-digest sha256:<64 hex> (docker buildx imagetools inspect $RUST_IMAGE)"
[[ "$RUST_IMAGE_DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]] || die "--rust-image-digest '$RUST_IMAGE_DIGEST' is not sha256:<64 lower-case hex>"
case "$RUST_IMAGE" in
    *@*) die "--rust-image '$RUST_IMAGE' already has a digest; give the tag and --rust-image-digest separately" ;;
esac
if [ -n "$SIGNING_CERT" ] || [ -n "$PRIVATE_KEY" ]; then
    if [ -z "$SIGNING_CERT" ] || [ -z "$PRIVATE_KEY" ]; then
        die "--signing-certificate and --private-key go together"
    fi
    [ -r "$SIGNING_CERT" ] || die "signing certificate '$SIGNING_CERT' is not readable"
    [ -r "$PRIVATE_KEY" ] || die "private key '$PRIVATE_KEY' is not readable"
fi
if [ -n "$SOURCE_DATE_EPOCH_ARG" ] && ! is_uint "$SOURCE_DATE_EPOCH_ARG"; then
    die "--source-date-epoch must be a number of seconds"
fi

# ---- tools -------------------------------------------------------------------------------
need_tool docker "Install Docker (Amazon Linux 2023: sudo dnf install -y docker && sudo systemctl enable --now docker) and add your user to the docker group."
need_tool nitro-cli "Install the Nitro Enclaves CLI (Amazon Linux 2023: sudo dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel), or run scripts/setup-parent-host.sh."
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, and may this user use it?)"

# ---- reproducibility inputs ----------------------------------------------------------------
if [ -z "$SOURCE_DATE_EPOCH_ARG" ]; then
    if command -v git >/dev/null 2>&1 && git -C "$REPO_ROOT" rev-parse HEAD >/dev/null 2>&1; then
        SOURCE_DATE_EPOCH_ARG="$(git -C "$REPO_ROOT" log -1 --format=%ct)"
    else
        SOURCE_DATE_EPOCH_ARG=0
    fi
fi
if [ -z "$TAG" ]; then
    rev="local"
    if command -v git >/dev/null 2>&1 && git -C "$REPO_ROOT" rev-parse HEAD >/dev/null 2>&1; then
        rev="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD)"
        if [ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no)" ]; then
            warn "the work tree has uncommitted changes: this image cannot be reproduced from a commit"
            rev="$rev-dirty"
        fi
    fi
    TAG="agentkeys-enclave:$rev"
fi

build_args=(
    --build-arg "RUST_IMAGE=$RUST_IMAGE"
    --build-arg "RUST_IMAGE_DIGEST=$RUST_IMAGE_DIGEST"
    --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH_ARG"
    --build-arg "ISSUER=$ISSUER"
    --build-arg "KMS_KEY_ARN=$KMS_KEY_ARN"
)
if [ -n "$APK_PACKAGES" ]; then
    build_args+=(--build-arg "APK_PACKAGES=$APK_PACKAGES")
fi

info "building $TAG from $RUST_IMAGE@$RUST_IMAGE_DIGEST (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH_ARG)"
DOCKER_BUILDKIT=1 docker build \
    --file "$REPO_ROOT/eif/Dockerfile" \
    "${build_args[@]}" \
    --tag "$TAG" \
    "$REPO_ROOT"

# The packed binary must be a production build: it refuses --mock (the mock NSM is not
# compiled in). Checked on the image itself, since that is what nitro-cli packs.
mock_check="$(docker run --rm --network none --entrypoint /agentkeys-enclave "$TAG" \
    --mock --usock /tmp/agentkeys-mock-check.sock --issuer "$ISSUER" --kms-key-arn "$KMS_KEY_ARN" 2>&1)" \
    && die "the enclave binary in $TAG accepts --mock: it was built with the mock NSM; refusing to pack it"
case "$mock_check" in
    *"needs a build with the cargo feature"*) info "the packed enclave binary refuses --mock" ;;
    *) die "the enclave binary in $TAG did not refuse --mock as a production build does: $mock_check" ;;
esac

mkdir -p "$(dirname "$OUTPUT")" "$(dirname "$MEASUREMENTS")"
nitro_args=(build-enclave --docker-uri "$TAG" --output-file "$OUTPUT")
if [ -n "$SIGNING_CERT" ]; then
    nitro_args+=(--signing-certificate "$SIGNING_CERT" --private-key "$PRIVATE_KEY")
fi
info "nitro-cli ${nitro_args[*]}"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
# nitro-cli prints progress on stderr and the measurements JSON on stdout.
nitro-cli "${nitro_args[@]}" >"$tmp"
grep -q '"PCR0"' "$tmp" || die "nitro-cli did not print measurements (output kept in $tmp)"
mv "$tmp" "$MEASUREMENTS"
trap - EXIT

pcr() {
    # Extract "PCRn": "<hex>" from nitro-cli's pretty-printed JSON without needing jq.
    sed -n "s/.*\"PCR$1\"[[:space:]]*:[[:space:]]*\"\([0-9a-fA-F]*\)\".*/\1/p" "$MEASUREMENTS" | head -n 1
}

info "EIF:          $OUTPUT"
info "measurements: $MEASUREMENTS"
echo "PCR0=$(pcr 0)"
echo "PCR1=$(pcr 1)"
echo "PCR2=$(pcr 2)"
if [ -n "$SIGNING_CERT" ]; then
    echo "PCR8=$(pcr 8)"
fi
info "verify independently: agentkeys-attest measure $OUTPUT --measurements $MEASUREMENTS"
info "next: agentkeys-broker kms-policy --measurements $MEASUREMENTS --account <id> --parent-role-arn <arn>"
