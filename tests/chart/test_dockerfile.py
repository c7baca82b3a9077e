"""The Dockerfile, read as text; CI builds and smoke-tests the image (scripts/build-image.sh).

Checks the points of issues 7 and 19: multi-stage, slim Python base, non-root user, no build
tools and no pip in the final stage, `meltguard` as the entrypoint, the installed extras
defined by pyproject.toml; and that the build context leaves local environments and secrets
out.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest

from .helm import REPO_ROOT

BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "clang", "cargo", "rustc", "git")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions with their backslash continuations joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ${ARG} substituted in FROM lines."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", image, re.I)
            assert match, f"cannot read FROM {rest}"
            stages.append(Stage(base=match.group(1), name=match.group(2) or str(len(stages))))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())[1]


def test_multi_stage_on_a_slim_python_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim(-\w+)?", stage.base), stage.base
    final = stages[-1]
    copied_from = [a for a in final.all("COPY") if a.startswith("--from=")]
    assert copied_from, "the final stage copies nothing from a build stage"
    assert all(
        a.split()[0].removeprefix("--from=") in {s.name for s in stages[:-1]} for a in copied_from
    )


def test_final_stage_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "no USER in the final stage: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "numeric USER lets runAsNonRoot be verified by the kubelet"


def test_no_build_tools_in_the_final_stage(stages: list[Stage]) -> None:
    final = stages[-1]
    for command in final.all("RUN"):
        assert "pip install" not in command, command
        installs = re.findall(r"apt-get install[^&;|]*", command)
        for install in installs:
            for tool in BUILD_TOOLS:
                assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", install), install
    build_runs = " ".join(run for stage in stages[:-1] for run in stage.all("RUN"))
    assert re.search(r"pip install \"?\.(\[|\"|\s|$)", build_runs), "the project is built from ."


def test_the_shipped_virtualenv_has_no_pip(stages: list[Stage]) -> None:
    """The venv the final stage copies is emptied of pip in the same RUN that fills it."""
    final = stages[-1]
    (copied,) = [a.split() for a in final.all("COPY") if a.startswith("--from=")]
    source_stage = next(s for s in stages if s.name == copied[0].removeprefix("--from="))
    venv = copied[1]
    (install,) = [run for run in source_stage.all("RUN") if f"{venv}/bin/pip install" in run]
    assert re.search(rf"{re.escape(venv)}/bin/pip uninstall --yes pip setuptools", install)
    assert install.index("pip install") < install.index("pip uninstall")


def test_installed_extras_are_defined_by_pyproject(stages: list[Stage]) -> None:
    build = stages[0]
    (extras_arg,) = [a for a in build.all("ARG") if a.startswith("EXTRAS=")]
    defined = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in extras_arg.removeprefix("EXTRAS=").split(","):
        assert extra in defined, f"the Dockerfile installs extra {extra!r}, not in pyproject"
    assert any('".[${EXTRAS}]"' in run for run in build.all("RUN"))


def test_meltguard_is_the_entrypoint(stages: list[Stage]) -> None:
    entrypoints = stages[-1].all("ENTRYPOINT")
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["meltguard"], "exec form, so signals reach meltguard"


def test_ports_of_the_three_parts_are_exposed(stages: list[Stage]) -> None:
    exposed = {port for args in stages[-1].all("EXPOSE") for port in args.split()}
    assert {"8000", "8080", "9400"} <= exposed


def test_parser_sees_a_root_final_stage() -> None:
    """The checks above can fail: a single-stage root image with gcc is caught."""
    _, stages = parse_dockerfile(
        "FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\n"
        'ENTRYPOINT ["meltguard"]\n'
    )
    assert len(stages) == 1
    assert stages[0].all("USER") == []
    with pytest.raises(AssertionError):
        test_no_build_tools_in_the_final_stage(stages)


def dockerignore_excludes(rules: list[str], path: str) -> bool:
    """Whether .dockerignore rules leave a context path out (the last matching rule wins).

    As Docker reads them: a rule covers a path when it matches the path or one of its parent
    folders; `**` stands for any number of folders; `!` brings a path back in.
    """
    parents = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    excluded = False
    for rule in rules:
        pattern = rule.removeprefix("!")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, parent) for parent in parents):
            excluded = not rule.startswith("!")
    return excluded


def dockerignore_rules() -> list[str]:
    return [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


SHIPPED = ("pyproject.toml", "README.md", "operator/meltguard/cli.py",
           "operator/meltguard/exporter/podresources.proto")
LEFT_OUT = (".git/HEAD", ".venv/bin/python", ".venv-scanners/bin/checkov", ".tools/helm",
            ".envtest/kube-apiserver", "tests/conftest.py", "charts/meltguard/values.yaml",
            "operator/meltguard/__pycache__/cli.cpython-311.pyc",
            "operator/meltguard.egg-info/PKG-INFO", ".env", "tls.key", "surge.png", "new-folder/x")


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    rules = dockerignore_rules()
    assert [p for p in SHIPPED if dockerignore_excludes(rules, p)] == []
    assert [p for p in LEFT_OUT if not dockerignore_excludes(rules, p)] == []


def test_dockerignore_reading_follows_the_last_rule() -> None:
    """The reader above can fail: without the allow-list, everything would be sent."""
    assert not dockerignore_excludes(["**/*.pyc"], ".venv/bin/python")
    assert dockerignore_excludes(["*", "!operator", "**/__pycache__"], "operator/a/__pycache__/b")
    assert not dockerignore_excludes(["*", "!operator"], "operator/meltguard/cli.py")
