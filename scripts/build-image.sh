#!/usr/bin/env bash
# Build meltguard's container image from the Dockerfile with buildah (no Docker engine needed),
# smoke-test it the way the chart runs it, print its size and each layer's size; optionally
# push it. Called by .ci/run; docs/image.md is the user's guide.
#
# The base: the Dockerfile's default (python:3.11-slim-bookworm) when it can be pulled; where no
# container registry is reachable (CI, the development machines), a Debian bookworm root made by
# debootstrap with Python 3.11 from Debian, kept in local storage as localhost/meltguard-base.
# pip inside the build uses this machine's pip certificate bundle and index (a pip.conf mounted
# into the build's RUN steps only; nothing of it lands in the image).
#
# Smoke test, in the built image as its own numeric user, with the root filesystem read-only
# and a fresh tmpfs on /tmp (unshare + chroot: this sandbox refuses `podman run`): the image's
# default command, every meltguard module imported (a missing runtime dependency fails here),
# `simulate` (with --plot: the PNG when the image has the plot extra, else the message naming
# it), `exporter --simulate 2` serving /metrics and `quota-server` answering /healthz on
# 127.0.0.1, `operator --help`.
#
# Usage: scripts/build-image.sh [--tag NAME] [--extras LIST] [--base IMAGE] [--push DEST]
#   --tag NAME      local image name (default localhost/meltguard:dev)
#   --extras LIST   pyproject extras to install (default: the Dockerfile's, `cluster`);
#                   `cluster,plot` gives `simulate --plot`
#   --base IMAGE    Python base image to build on (skips the pull attempt and debootstrap)
#   --push DEST     after the smoke test, push to DEST (registry/name:tag; log in first with
#                   `buildah login REGISTRY`)
#   --smoke-only    no build: smoke-test (and push) the image already tagged NAME
# Needs root (buildah's vfs storage, unshare, chroot); installs buildah and debootstrap with
# apt-get when missing.
set -euo pipefail

DEFAULT_BASE="docker.io/library/python:3.11-slim-bookworm"
LOCAL_BASE="localhost/meltguard-base:bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="localhost/meltguard:dev"
extras=""
base=""
push_dest=""
smoke_only=false
while (($#)); do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --extras) extras="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        --push) push_dest="$2"; shift 2 ;;
        --smoke-only) smoke_only=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

work="$(mktemp -d /var/tmp/meltguard-image.XXXXXX)"
containers=()
cleanup() {
    local ctr
    for ctr in "${containers[@]}"; do
        [[ -z "$ctr" ]] || buildah rm "$ctr" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

step_started=$SECONDS
step() {
    echo "build-image: [$((SECONDS - step_started)) s] $*"
}

install_missing_tools() {
    local need=()
    command -v buildah >/dev/null || need+=(buildah)
    command -v unshare >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        step "installing ${need[*]}"
        apt_install "${need[@]}"
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The Dockerfile's default base when a registry answers, else the local debootstrap one.
choose_base() {
    if [[ -n "$base" ]]; then
        return
    fi
    if timeout 120 buildah pull --quiet "$DEFAULT_BASE" >/dev/null 2>"$work/pull.log"; then
        base="$DEFAULT_BASE"
        step "base: $base (pulled)"
        return
    fi
    step "base: $DEFAULT_BASE cannot be pulled ($(tail -n 1 "$work/pull.log"))"
    if ! buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
        make_debootstrap_base
    fi
    base="$LOCAL_BASE"
    step "base: $base (Debian bookworm + python3 from debootstrap)"
}

# A stand-in for python:3.11-slim-bookworm: minimal Debian with python3, venv and CA
# certificates, `python` linked to python3, no apt lists or caches, no man pages.
make_debootstrap_base() {
    command -v debootstrap >/dev/null || apt_install debootstrap
    step "debootstrap: bookworm minbase + python3 from $DEBIAN_MIRROR"
    local rootfs="$work/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; return 1; }
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man/*
    local ctr mnt
    ctr="$(buildah from scratch)"
    containers+=("$ctr")
    mnt="$(buildah mount "$ctr")"
    cp -a "$rootfs/." "$mnt/"
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 \
        --created-by "debootstrap --variant=minbase bookworm + python3 python3-venv ca-certificates" \
        "$ctr"
    buildah commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
    containers=("${containers[@]/$ctr/}")
    rm -rf "$rootfs"
}

# pip inside the build: this machine's CA bundle and index, as pip here is configured.
write_build_pip_conf() {
    local cert index
    cert="${PIP_CERT:-$(pip_config global.cert)}"
    cert="${cert:-/etc/ssl/certs/ca-certificates.crt}"
    index="${PIP_INDEX_URL:-$(pip_config global.index-url)}"
    mkdir -p "$work/pip"
    {
        echo "[global]"
        if [[ -f "$cert" ]]; then
            cp "$cert" "$work/pip/ca.crt"
            echo "cert = /etc/meltguard-build-ca.crt"
        fi
        if [[ "$index" == http* ]]; then
            echo "index-url = $index"
        fi
    } >"$work/pip/pip.conf"
}

pip_config() {
    python3 -m pip config get "$1" 2>/dev/null || true
}

build() {
    write_build_pip_conf
    local args=(--layers --pull=false --network host --build-arg "PYTHON_IMAGE=$base"
        --volume "$work/pip/pip.conf:/etc/pip.conf:ro")
    if [[ -f "$work/pip/ca.crt" ]]; then
        args+=(--volume "$work/pip/ca.crt:/etc/meltguard-build-ca.crt:ro")
    fi
    if [[ -n "$extras" ]]; then
        args+=(--build-arg "EXTRAS=$extras")
    fi
    step "buildah bud -t $tag (base $base${extras:+, extras $extras})"
    buildah bud "${args[@]}" --tag "$tag" --file "$repo_root/Dockerfile" "$repo_root"
    step "built $tag"
}

# Image size, each layer with the instruction that made it, and the virtualenv's size.
report_sizes() {
    buildah inspect --type image "$tag" >"$work/inspect.json"
    python3 - "$work/inspect.json" <<'EOF'
import json, sys

image = json.load(open(sys.argv[1]))
layers = json.loads(image["Manifest"])["layers"]
history = [h for h in image["OCIv1"].get("history", []) if not h.get("empty_layer")]
print(f"image size: {sum(layer['size'] for layer in layers) / 1e6:.1f} MB in {len(layers)} layers")
for layer, made in zip(layers, history + [{}] * len(layers)):
    created_by = " ".join(made.get("created_by", "?").split()).removeprefix("/bin/sh -c ")
    size = layer["size"]
    shown = f"{size / 1e6:8.1f} MB" if size >= 100_000 else f"{size / 1e3:8.1f} kB"
    print(f"  {shown}  {created_by[:110]}")
EOF
}

# --- smoke test ------------------------------------------------------------------------

smoke_root=""
image_user=""
image_env=()
image_command=()

prepare_smoke() {
    local ctr
    ctr="$(buildah from --pull=false "$tag")"
    containers+=("$ctr")
    smoke_root="$(buildah mount "$ctr")"
    image_user="$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")"
    mapfile -t image_env < <(buildah inspect --type image \
        --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$tag" | sed '/^$/d')
    mapfile -t image_command < <(buildah inspect --type image \
        --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' \
        "$tag" | sed '/^$/d')
    [[ "$image_user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] \
        || { echo "build-image: the image's USER is '$image_user', not a numeric non-root user" >&2; return 1; }
    echo "  venv: $(du -sm "$smoke_root/opt/meltguard" | cut -f1) MB (du -sm /opt/meltguard); largest:"
    (cd "$smoke_root"/opt/meltguard/lib/python3*/site-packages && du -sm -- * | sort -rn \
        | head -n 8 | sed 's/^/    /')
    mkdir -p "$work/seed"
    printf '%s\n' '{"policy": "inference/imagegen", "updated": "2025-03-27T00:00:00Z",' \
        ' "tiers": [{"name": "free", "limit": 3, "baseline": 3, "windowSeconds": 86400},' \
        '           {"name": "pro", "unlimited": true}]}' >"$work/seed/quotas.json"
}

# The command line that runs ARGS in the image as its user, in `argv`: root read-only, a fresh
# tmpfs on /tmp holding the seed files, host network (servers listen on 127.0.0.1), at most
# 300 s. SIGTERM to it reaches the command.
image_argv() {
    # shellcheck disable=SC2016  # the inner bash expands its own "$1" ... "$@"
    argv=(timeout 300 unshare --mount --propagation private --fork --kill-child=SIGTERM
        bash -c 'set -e
            root="$1" user="$2" seed="$3"; shift 3
            mount --bind "$root" "$root" && mount -o remount,bind,ro "$root"
            mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
            cp "$seed"/* "$root/tmp/" && chmod a+r "$root"/tmp/*
            mount -t proc proc "$root/proc"
            mount --rbind /dev "$root/dev"
            exec chroot --userspec="$user" "$root" /usr/bin/env -i "$@"'
        in-image "$smoke_root" "$image_user" "$work/seed" "${image_env[@]}" "$@")
}

in_image() {
    local argv
    image_argv "$@"
    "${argv[@]}"
}

check() {
    local name="$1"
    shift
    if "$@" >"$work/check.log" 2>&1; then
        echo "  ok    $name: $(sed '/^\s*$/d' "$work/check.log" | tail -n 1 | cut -c1-100)"
    else
        echo "  FAIL  $name" >&2
        sed 's/^/        /' "$work/check.log" >&2
        return 1
    fi
}

# output_has TEXT COMMAND...: run it, show its output, succeed when it exits 0 with TEXT in it.
output_has() {
    local text="$1" output
    shift
    output="$("$@")" || return
    echo "$output"
    [[ "$output" == *"$text"* ]] || { echo "(no '$text' in this output)"; return 1; }
}

the_root_is_read_only() {
    in_image python -c '
import errno
try:
    open("/opt/meltguard/written", "w")
except OSError as error:
    assert error.errno in (errno.EROFS, errno.EACCES), error
else:
    raise SystemExit("/opt/meltguard is writable")
with open("/tmp/written", "w") as scratch:
    scratch.write("ok")
print("root read-only, /tmp writable")'
}

no_pip_in_the_image() {
    [[ ! -e "$smoke_root/opt/meltguard/bin/pip" ]] || { echo "/opt/meltguard/bin/pip exists"; return 1; }
    if in_image python -m pip --version; then
        echo "python -m pip runs in the image"
        return 1
    fi
}

every_module_imports() {
    in_image python -c '
import importlib, pkgutil, meltguard
failed = []
for module in pkgutil.walk_packages(meltguard.__path__, "meltguard."):
    try:
        importlib.import_module(module.name)
    except ImportError as error:
        failed.append(f"{module.name}: {error}")
print("\n".join(failed) or "every meltguard module imports")
raise SystemExit(1 if failed else 0)'
}

# With the plot extra the PNG is written to /tmp; without it, exit 2 naming the extra.
simulate_plot() {
    if in_image python -c 'import matplotlib' 2>/dev/null; then
        in_image python -c '
from meltguard.cli import main
status = main(["simulate", "--plot", "/tmp/surge.png"])
with open("/tmp/surge.png", "rb") as png:
    assert png.read(8) == b"\x89PNG\r\n\x1a\n", "/tmp/surge.png is no PNG"
raise SystemExit(status)'
    else
        local output status=0
        output="$(in_image meltguard simulate --plot /tmp/surge.png 2>&1)" || status=$?
        echo "$output (exit $status)"
        [[ $status -eq 2 && "$output" == *"meltguard[plot]"* ]]
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serves_http URL EXPECTED COMMAND...: start a server in the image, wait for URL to answer
# 200 with EXPECTED in its body, stop it.
serves_http() {
    local url="$1" expected="$2"
    shift 2
    local argv
    image_argv "$@"
    "${argv[@]}" &
    local server=$!
    local status=0
    python3 - "$url" "$expected" <<'EOF' || status=$?
import sys, time, urllib.request

url, expected = sys.argv[1:]
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            body = answer.read().decode()
        break
    except OSError as error:
        if time.monotonic() > deadline:
            sys.exit(f"{url}: no answer in 60 s ({error})")
        time.sleep(0.5)
if expected not in body:
    sys.exit(f"{url}: {expected!r} not in the answer:\n{body[:2000]}")
print(f"{url}: 200, {len(body)} bytes, has {expected!r}")
EOF
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    return "$status"
}

smoke_test() {
    step "smoke test in $tag as user $image_user, read-only root, tmpfs /tmp"
    local exporter_port quota_port
    exporter_port="$(free_port)"
    quota_port="$(free_port)"
    check "default command (${image_command[*]})" \
        output_has "quota-server" in_image "${image_command[@]}"
    check "root filesystem read-only, /tmp writable" the_root_is_read_only
    check "no pip" no_pip_in_the_image
    check "every meltguard module imports" every_module_imports
    check "simulate" output_has "ghibli-surge" in_image meltguard simulate
    check "simulate --plot /tmp/surge.png" simulate_plot
    check "exporter --simulate 2: /metrics on 127.0.0.1:$exporter_port" \
        serves_http "http://127.0.0.1:$exporter_port/metrics" "meltguard_gpu_" \
        meltguard exporter --simulate 2 --host 127.0.0.1 --port "$exporter_port"
    check "quota-server: /healthz on 127.0.0.1:$quota_port" \
        serves_http "http://127.0.0.1:$quota_port/healthz" "ok" \
        meltguard quota-server --limits /tmp/quotas.json --host 127.0.0.1 --port "$quota_port"
    check "operator --help" in_image meltguard operator --help
    step "smoke test passed"
}

push() {
    step "pushing $tag to $push_dest"
    buildah push "$tag" "docker://$push_dest"
    step "pushed $push_dest"
}

install_missing_tools
if ! $smoke_only; then
    choose_base
    build
fi
report_sizes
prepare_smoke
smoke_test
if [[ -n "$push_dest" ]]; then
    push
fi
# Untagged images (earlier builds, intermediate stages) would fill the disk build after build.
buildah rmi --prune >/dev/null 2>&1 || true
step "done"
