#!/usr/bin/env bash
# Builds the reproducible enclave image (eif/Dockerfile) from the pinned inputs in
# eif/inputs.env and turns it into an EIF with `nitro-cli build-enclave`; writes
# nitro-cli's measurements JSON and prints the PCRs.
#
# Usage:
#   scripts/build-eif.sh --issuer https://issuer.example.com \
#       --kms-key-arn arn:aws:kms:<region>:<account>:key/<key id> \
#       [--auth-mode signed-session[,wallet-signature] | --auth-mode parent-vouched] \
#       [--session-key-thumbprint <RFC 7638 thumbprint>[,<next>]] \
#       [--acme-directory https://acme-v02.api.letsencrypt.org/directory] \
#       [--output eif/agentkeys-enclave.eif] [--measurements eif/measurements.json] \
#       [--tag agentkeys-enclave:<rev>] [--inputs eif/inputs.env] \
#       [--signing-certificate cert.pem --private-key key.pem] [--check-reproducible]
#
# --acme-directory makes the enclave terminate the issuer's TLS itself, with a certificate
# its own ACME client obtains from that CA; the URL is measured like --issuer. The parent
# host then needs the CA host in its vsock-proxy allowlist (setup-parent-host.sh
# --acme-directory with the same URL).
#
# Every build input besides the source tree comes from eif/inputs.env (builder image and
# digest, toolchain, target, RUSTFLAGS, Alpine packages, SOURCE_DATE_EPOCH); change it
# with scripts/update-eif-inputs.sh. These flags override one value for this build only,
# with a warning, and the result will not match measurements published from the file:
#       [--rust-image rust:<ver>-alpine] [--rust-image-digest sha256:<64 hex>]
#       [--source-date-epoch N] [--apk-packages "name=version ..."]
#
# --check-reproducible builds the image twice, each time without the build cache and
# after removing the previous image, packs both with nitro-cli and compares PCR0, PCR1
# and PCR2: exit 0 when equal, 1 when not, 77 (SKIPPED, with the reason) when Docker or
# nitro-cli is not usable here. The two EIFs are kept in a temporary directory it names.
#
# The source commit (git rev-parse HEAD) and the inputs file's SHA-256 go into the EIF's
# metadata section (`nitro-cli build-enclave --metadata`), which `agentkeys-attest
# measure` prints; that section is not measured. Run on an x86_64 host with Docker and
# aws-nitro-enclaves-cli (the parent instance, or any build host with nitro-cli).
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR="$(cd "$SCRIPT_DIR" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

usage() {
    sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Exit status of --check-reproducible when it cannot run here (the automake convention
# for a skipped test), so that a caller cannot mistake a skip for a pass.
EXIT_SKIPPED=77

ISSUER=""
KMS_KEY_ARN=""
# The enclave's default: it signs only for the wallet a session the backend signed names.
AUTH_MODES="signed-session"
SESSION_KEYS=""
ACME_DIRECTORY=""
INPUTS="$REPO_ROOT/eif/inputs.env"
OUTPUT="$REPO_ROOT/eif/agentkeys-enclave.eif"
MEASUREMENTS="$REPO_ROOT/eif/measurements.json"
TAG=""
SIGNING_CERT=""
PRIVATE_KEY=""
CHECK_REPRODUCIBLE=0
OVERRIDE_RUST_IMAGE=""
OVERRIDE_RUST_IMAGE_DIGEST=""
OVERRIDE_SOURCE_DATE_EPOCH=""
OVERRIDE_APK_PACKAGES=""
OVERRIDE_APK_PACKAGES_SET=0

while [ $# -gt 0 ]; do
    case "$1" in
        --issuer) ISSUER="${2:?--issuer needs a value}"; shift 2 ;;
        --kms-key-arn) KMS_KEY_ARN="${2:?--kms-key-arn needs a value}"; shift 2 ;;
        --auth-mode) AUTH_MODES="${2:?--auth-mode needs a value}"; shift 2 ;;
        --session-key-thumbprint) SESSION_KEYS="${SESSION_KEYS:+$SESSION_KEYS,}${2:?--session-key-thumbprint needs a value}"; shift 2 ;;
        --acme-directory) ACME_DIRECTORY="${2:?--acme-directory needs a value}"; shift 2 ;;
        --inputs) INPUTS="${2:?--inputs needs a value}"; shift 2 ;;
        --rust-image) OVERRIDE_RUST_IMAGE="${2:?--rust-image needs a value}"; shift 2 ;;
        --rust-image-digest) OVERRIDE_RUST_IMAGE_DIGEST="${2:?--rust-image-digest needs a value}"; shift 2 ;;
        --output) OUTPUT="${2:?--output needs a value}"; shift 2 ;;
        --measurements) MEASUREMENTS="${2:?--measurements needs a value}"; shift 2 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
        --source-date-epoch) OVERRIDE_SOURCE_DATE_EPOCH="${2:?--source-date-epoch needs a value}"; shift 2 ;;
        --apk-packages) OVERRIDE_APK_PACKAGES="${2?--apk-packages needs a value}"; OVERRIDE_APK_PACKAGES_SET=1; shift 2 ;;
        --signing-certificate) SIGNING_CERT="${2:?--signing-certificate needs a value}"; shift 2 ;;
        --private-key) PRIVATE_KEY="${2:?--private-key needs a value}"; shift 2 ;;
        --check-reproducible) CHECK_REPRODUCIBLE=1; shift ;;
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
if ! reason="$(validate_auth_modes "$AUTH_MODES" "$SESSION_KEYS")"; then
    die "$reason"
fi
if [ -n "$ACME_DIRECTORY" ] && ! reason="$(validate_acme_directory "$ACME_DIRECTORY")"; then
    die "--acme-directory: $reason"
fi
if [ -n "$SIGNING_CERT" ] || [ -n "$PRIVATE_KEY" ]; then
    if [ -z "$SIGNING_CERT" ] || [ -z "$PRIVATE_KEY" ]; then
        die "--signing-certificate and --private-key go together"
    fi
    [ -r "$SIGNING_CERT" ] || die "signing certificate '$SIGNING_CERT' is not readable"
    [ -r "$PRIVATE_KEY" ] || die "private key '$PRIVATE_KEY' is not readable"
fi

# The pinned inputs, then the overrides (each announced), then one validation of the lot.
read_eif_inputs "$INPUTS" >/dev/null || die "$(read_eif_inputs "$INPUTS")"
pinned_rust_image="$EIF_RUST_IMAGE"
overrides=()
if [ -n "$OVERRIDE_RUST_IMAGE" ]; then
    case "$OVERRIDE_RUST_IMAGE" in
        *@*) die "--rust-image '$OVERRIDE_RUST_IMAGE' already has a digest; give the tag and --rust-image-digest separately" ;;
    esac
    EIF_RUST_IMAGE="$OVERRIDE_RUST_IMAGE"
    # The toolchain check follows the tag: rust:1.96.0-alpine pins rustc 1.96.0.
    tag_version="${OVERRIDE_RUST_IMAGE#*:}"
    tag_version="${tag_version%%-*}"
    [[ "$tag_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
        || die "--rust-image '$OVERRIDE_RUST_IMAGE' must name an exact toolchain (rust:<x.y.z>-alpine) so that the build can check it"
    EIF_RUST_TOOLCHAIN="$tag_version"
    overrides+=("RUST_IMAGE=$EIF_RUST_IMAGE")
fi
if [ -n "$OVERRIDE_RUST_IMAGE_DIGEST" ]; then
    [[ "$OVERRIDE_RUST_IMAGE_DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]] \
        || die "--rust-image-digest '$OVERRIDE_RUST_IMAGE_DIGEST' is not sha256:<64 lower-case hex>"
    EIF_RUST_IMAGE_DIGEST="$OVERRIDE_RUST_IMAGE_DIGEST"
    overrides+=("RUST_IMAGE_DIGEST=$EIF_RUST_IMAGE_DIGEST")
elif [ -n "$OVERRIDE_RUST_IMAGE" ]; then
    die "--rust-image needs --rust-image-digest too: the digest in $INPUTS is that of $pinned_rust_image"
fi
if [ -n "$OVERRIDE_SOURCE_DATE_EPOCH" ]; then
    is_uint "$OVERRIDE_SOURCE_DATE_EPOCH" || die "--source-date-epoch must be a number of seconds"
    EIF_SOURCE_DATE_EPOCH="$OVERRIDE_SOURCE_DATE_EPOCH"
    overrides+=("SOURCE_DATE_EPOCH=$EIF_SOURCE_DATE_EPOCH")
fi
if [ "$OVERRIDE_APK_PACKAGES_SET" = 1 ]; then
    EIF_APK_PACKAGES="$OVERRIDE_APK_PACKAGES"
    overrides+=("APK_PACKAGES=$EIF_APK_PACKAGES")
fi
if ! reason="$(validate_eif_inputs "$REPO_ROOT")"; then
    die "build inputs ($INPUTS${overrides[*]:+ with overrides}): $reason"
fi
if [ "$EIF_RUST_IMAGE_DIGEST" = "$EIF_PLACEHOLDER_DIGEST" ]; then
    die "the builder image is not pinned: $INPUTS holds the placeholder digest (all zeros). Pin it with scripts/update-eif-inputs.sh --resolve (or --digest sha256:<64 hex>) and commit the file"
fi
if [ ${#overrides[@]} -gt 0 ]; then
    warn "************************************************************************"
    warn "build inputs overridden on the command line: ${overrides[*]}"
    warn "this image is NOT built from $INPUTS as committed: its PCRs will not match"
    warn "measurements published for that file. To change an input for good, use"
    warn "scripts/update-eif-inputs.sh and commit eif/inputs.env."
    warn "************************************************************************"
fi

# ---- tools -------------------------------------------------------------------------------
skip() {
    echo "SKIPPED: --check-reproducible cannot run here: $*"
    exit "$EXIT_SKIPPED"
}
docker_hint="Install Docker (Amazon Linux 2023: sudo dnf install -y docker && sudo systemctl enable --now docker) and add your user to the docker group."
nitro_hint="Install the Nitro Enclaves CLI (Amazon Linux 2023: sudo dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel), or run scripts/setup-parent-host.sh."
if [ "$CHECK_REPRODUCIBLE" = 1 ]; then
    command -v docker >/dev/null 2>&1 || skip "docker not found on PATH. $docker_hint"
    command -v nitro-cli >/dev/null 2>&1 || skip "nitro-cli not found on PATH. $nitro_hint"
    docker info >/dev/null 2>&1 || skip "cannot reach the Docker daemon (is it running, and may this user use it?)"
else
    need_tool docker "$docker_hint"
    need_tool nitro-cli "$nitro_hint"
    docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, and may this user use it?)"
fi

# ---- provenance: the commit and the inputs file, for the EIF's metadata ------------------
source_commit=""
source_dirty=false
if command -v git >/dev/null 2>&1 && git -C "$REPO_ROOT" rev-parse HEAD >/dev/null 2>&1; then
    source_commit="$(git -C "$REPO_ROOT" rev-parse HEAD)"
    if [ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no)" ]; then
        warn "the work tree has uncommitted changes: this image cannot be reproduced from a commit"
        source_dirty=true
    fi
fi
if [ -z "$TAG" ]; then
    rev="local"
    if [ -n "$source_commit" ]; then
        rev="${source_commit:0:12}"
        if [ "$source_dirty" = true ]; then rev="$rev-dirty"; fi
    fi
    TAG="agentkeys-enclave:$rev"
fi
inputs_sha256="$(sha256sum "$INPUTS" | cut -d' ' -f1)"
# The inputs file as the repository names it (eif/inputs.env), when it is the repository's.
inputs_abs="$(cd "$(dirname "$INPUTS")" && pwd)/$(basename "$INPUTS")"
case "$inputs_abs" in
    "$REPO_ROOT"/*) inputs_name="${inputs_abs#"$REPO_ROOT"/}" ;;
    *) inputs_name="$inputs_abs" ;;
esac

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

# json_string VALUE: VALUE as a JSON string (the values here are printable ASCII).
json_string() {
    local s="${1//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}
{
    printf '{\n'
    printf '  "agentkeys_source_commit": %s,\n' "$(json_string "$source_commit")"
    printf '  "agentkeys_source_dirty": %s,\n' "$source_dirty"
    printf '  "agentkeys_build_inputs": %s,\n' "$(json_string "$inputs_name")"
    printf '  "agentkeys_build_inputs_sha256": %s,\n' "$(json_string "$inputs_sha256")"
    printf '  "agentkeys_build_overrides": ['
    sep=""
    for o in "${overrides[@]}"; do printf '%s%s' "$sep" "$(json_string "$o")"; sep=", "; done
    printf ']\n}\n'
} >"$workdir/metadata.json"

build_args=(
    --build-arg "RUST_IMAGE=$EIF_RUST_IMAGE"
    --build-arg "RUST_IMAGE_DIGEST=$EIF_RUST_IMAGE_DIGEST"
    --build-arg "RUST_TOOLCHAIN=$EIF_RUST_TOOLCHAIN"
    --build-arg "RUST_TARGET=$EIF_RUST_TARGET"
    --build-arg "ENCLAVE_RUSTFLAGS=$EIF_ENCLAVE_RUSTFLAGS"
    --build-arg "APK_PACKAGES=$EIF_APK_PACKAGES"
    --build-arg "SOURCE_DATE_EPOCH=$EIF_SOURCE_DATE_EPOCH"
    --build-arg "ISSUER=$ISSUER"
    --build-arg "KMS_KEY_ARN=$KMS_KEY_ARN"
    --build-arg "AUTH_MODES=$AUTH_MODES"
    --build-arg "SESSION_KEYS=$SESSION_KEYS"
    --build-arg "ACME_DIRECTORY=$ACME_DIRECTORY"
)

# build_image TAG [docker build flags...]: the image, from the inputs above.
build_image() {
    local tag="$1"
    shift
    info "building $tag from $EIF_RUST_IMAGE@$EIF_RUST_IMAGE_DIGEST (rustc $EIF_RUST_TOOLCHAIN, $EIF_RUST_TARGET, SOURCE_DATE_EPOCH=$EIF_SOURCE_DATE_EPOCH, inputs $inputs_name sha256:$inputs_sha256)"
    DOCKER_BUILDKIT=1 docker build \
        --file "$REPO_ROOT/eif/Dockerfile" \
        "${build_args[@]}" \
        "$@" \
        --tag "$tag" \
        "$REPO_ROOT"
}

# check_refuses_mock TAG: the packed binary must be a production build: it refuses
# --mock (the mock NSM is not compiled in). Checked on the image itself, since that is
# what nitro-cli packs.
check_refuses_mock() {
    local mock_check
    mock_check="$(docker run --rm --network none --entrypoint /agentkeys-enclave "$1" \
        --mock --usock /tmp/agentkeys-mock-check.sock --issuer "$ISSUER" --kms-key-arn "$KMS_KEY_ARN" 2>&1)" \
        && die "the enclave binary in $1 accepts --mock: it was built with the mock NSM; refusing to pack it"
    case "$mock_check" in
        *"needs a build with the cargo feature"*) info "the packed enclave binary refuses --mock" ;;
        *) die "the enclave binary in $1 did not refuse --mock as a production build does: $mock_check" ;;
    esac
}

# pack TAG EIF MEASUREMENTS: nitro-cli build-enclave; its measurements JSON to MEASUREMENTS.
pack() {
    local tag="$1" eif="$2" measurements="$3" out="$workdir/nitro-cli.out"
    mkdir -p "$(dirname "$eif")" "$(dirname "$measurements")"
    local nitro_args=(build-enclave --docker-uri "$tag" --output-file "$eif" --metadata "$workdir/metadata.json")
    if [ -n "$SIGNING_CERT" ]; then
        nitro_args+=(--signing-certificate "$SIGNING_CERT" --private-key "$PRIVATE_KEY")
    fi
    info "nitro-cli ${nitro_args[*]}"
    # nitro-cli prints progress on stderr and the measurements JSON on stdout.
    nitro-cli "${nitro_args[@]}" >"$out"
    grep -q '"PCR0"' "$out" || { cat "$out" >&2; die "nitro-cli did not print measurements (its output is above)"; }
    mv "$out" "$measurements"
}

# pcr N FILE: "PCRn": "<hex>" from nitro-cli's JSON, without needing jq.
pcr() {
    sed -n "s/.*\"PCR$1\"[[:space:]]*:[[:space:]]*\"\([0-9a-fA-F]*\)\".*/\1/p" "$2" | head -n 1
}

if [ "$CHECK_REPRODUCIBLE" = 1 ]; then
    keep="$(mktemp -d "${TMPDIR:-/tmp}/agentkeys-eif-repro.XXXXXX")"
    for run in 1 2; do
        tag="$TAG-repro$run"
        docker image rm --force "$tag" >/dev/null 2>&1 || true
        # --no-cache: no layer of an earlier build is reused; --pull: the base image is
        # fetched again by its digest.
        build_image "$tag" --no-cache --pull
        check_refuses_mock "$tag"
        pack "$tag" "$keep/build$run.eif" "$keep/build$run.json"
        docker image rm --force "$tag" >/dev/null 2>&1 || true
    done
    same=1
    for i in 0 1 2; do
        first="$(pcr "$i" "$keep/build1.json")"
        second="$(pcr "$i" "$keep/build2.json")"
        if [ -n "$first" ] && [ "$first" = "$second" ]; then
            echo "PCR$i equal:   $first"
        else
            echo "PCR$i DIFFERS: build 1 ${first:-<none>}, build 2 ${second:-<none>}"
            same=0
        fi
    done
    info "the two builds: $keep/build1.eif, $keep/build2.eif (measurements next to them)"
    if [ "$same" = 1 ]; then
        echo "REPRODUCIBLE: two clean builds of ${source_commit:-this tree} with $inputs_name gave the same PCR0, PCR1 and PCR2"
        exit 0
    fi
    echo "NOT REPRODUCIBLE: two clean builds gave different measurements (compare them with agentkeys-attest measure)"
    exit 1
fi

build_image "$TAG"
check_refuses_mock "$TAG"
pack "$TAG" "$OUTPUT" "$MEASUREMENTS"

info "EIF:          $OUTPUT"
info "measurements: $MEASUREMENTS"
info "built from:   ${source_commit:-<no git commit>}$([ "$source_dirty" = true ] && echo ' (dirty)') with $inputs_name (sha256:$inputs_sha256)"
echo "PCR0=$(pcr 0 "$MEASUREMENTS")"
echo "PCR1=$(pcr 1 "$MEASUREMENTS")"
echo "PCR2=$(pcr 2 "$MEASUREMENTS")"
if [ -n "$SIGNING_CERT" ]; then
    echo "PCR8=$(pcr 8 "$MEASUREMENTS")"
fi
info "verify independently: agentkeys-attest measure $OUTPUT --measurements $MEASUREMENTS"
info "next: agentkeys-broker kms-policy --measurements $MEASUREMENTS --account <id> --parent-role-arn <arn>"
