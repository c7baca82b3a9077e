"""pyproject.toml's extras against what each part imports: the image installs `cluster` only.

Every third-party import in a part's modules (lazy ones inside functions included) must come
from a distribution that the base dependencies or that part's extra name, so a part installed
with its extra, as in the image, never meets a missing module. The image's smoke test
(scripts/build-image.sh) checks the same on the built image; this catches it without one.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .helm import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "operator" / "meltguard"

#: Module prefix -> the extras its modules may draw on, beyond the base dependencies. The
#: longest matching prefix wins; modules under no prefix (api, core, sim, cli, ...) get none.
PART_EXTRAS: dict[str, tuple[str, ...]] = {
    "meltguard.exporter": ("exporter",),
    "meltguard.ingest": ("operator",),
    "meltguard.k8s": ("operator",),
    "meltguard.quota": ("quota",),
    "meltguard.sim.plot": ("plot",),
}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@cache
def project() -> dict[str, object]:
    project_table: dict[str, object] = tomllib.loads(
        (REPO_ROOT / "pyproject.toml").read_text()
    )["project"]
    return project_table


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The base dependencies and these extras, with `meltguard[...]` ones expanded."""
    optional: dict[str, list[str]] = project()["optional-dependencies"]  # type: ignore[assignment]
    found = [Requirement(r) for r in project()["dependencies"]]  # type: ignore[attr-defined]
    pending = list(extras)
    while pending:
        extra = pending.pop()
        assert extra in optional, f"no extra {extra!r} in pyproject.toml"
        for text in optional[extra]:
            requirement = Requirement(text)
            if requirement.name == "meltguard":
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def distributions(extras: tuple[str, ...]) -> set[str]:
    """Distributions the base dependencies and these extras name directly."""
    return {normalized(requirement.name) for requirement in requirements(extras)}


@cache
def installed_with(extras: tuple[str, ...]) -> frozenset[str]:
    """Every distribution installing these extras brings, from the installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = requirements(extras)
    while pending:
        requirement = pending.pop()
        key = (normalized(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra})
                for extra in requirement.extras or {""}
            ):
                pending.append(needed)
    return frozenset(name for name, _ in seen)


@cache
def import_providers() -> dict[str, list[str]]:
    """Top-level import name -> the installed distributions that provide it."""
    return dict(metadata.packages_distributions())


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a module that are neither stdlib nor ours."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n != "meltguard" and n not in sys.stdlib_module_names}


def part_extras(module: str) -> tuple[str, ...]:
    matches = [p for p in PART_EXTRAS if module == p or module.startswith(p + ".")]
    return PART_EXTRAS[max(matches, key=len)] if matches else ()


def modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_every_import_is_installed_with_its_part(path: Path) -> None:
    module = module_name(path)
    extras = part_extras(module)
    installed = installed_with(extras)
    providers = import_providers()
    for name in sorted(third_party_imports(path)):
        offered = {normalized(d) for d in providers.get(name, [])}
        assert offered, f"{module} imports {name}, which no installed distribution provides"
        assert offered & installed, (
            f"{module} imports {name} (from {', '.join(sorted(offered))}), which installing"
            f" the base dependencies and the extras {list(extras)} does not bring"
        )


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    """The base alone does not bring kopf: a core module importing it would be caught."""
    source = tmp_path / "module.py"
    source.write_text("import kopf\nfrom yaml import safe_load\nimport json\n")
    assert third_party_imports(source) == {"kopf", "yaml"}
    assert "kopf" not in installed_with(())
    assert "kopf" in installed_with(("cluster",))
    assert "matplotlib" not in installed_with(("cluster",))
    assert "hiredis" in installed_with(("quota",)), "an extra of a requirement is followed"


def test_the_image_extras_cover_every_part() -> None:
    """`cluster` (the image) reaches every part's extra; `all` adds plotting; dev has all."""
    cluster = distributions(("cluster",))
    for extras in set(PART_EXTRAS.values()) - {("plot",)}:
        assert distributions(extras) <= cluster
    assert distributions(("all",)) == cluster | distributions(("plot",))
    assert distributions(("all",)) <= distributions(("dev",))


def test_simulate_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    """Where matplotlib is missing (the image), --plot says what to install, before simulating."""
    png = tmp_path / "day.png"
    hide_matplotlib = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from meltguard.cli import main\n"
        f"sys.exit(main(['simulate', '--plot', {str(png)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_matplotlib], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'meltguard[plot]'" in done.stderr
    assert not png.exists()


@pytest.mark.parametrize(("command", "hidden", "extra"), [
    (["operator", "--namespace", "inference"], "kopf", "operator"),
    (["quota-server", "--limits", "/nonexistent"], "redis", "quota"),
    (["exporter", "--simulate", "1", "--port", "0"], "prometheus_client", "exporter"),
])
def test_a_part_without_its_extra_names_the_extra(command: list[str], hidden: str,
                                                  extra: str) -> None:
    """A part started without its extra's packages says which extra to install, no traceback."""
    script = (
        f"import sys; sys.modules[{hidden!r}] = None\n"
        "from meltguard.cli import main\n"
        f"sys.exit(main({command!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"pip install 'meltguard[{extra}]'" in done.stderr
    assert f"{hidden!r} is not installed" in done.stderr
    assert "Traceback" not in done.stderr
