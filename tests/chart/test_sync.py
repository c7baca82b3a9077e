"""The chart's crds/ stays identical to the top-level crds/ generated from the models."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .helm import CHART_DIR, REPO_ROOT
from .test_rbac import load_sync


@pytest.mark.parametrize("folder", ["crds", "examples"])
def test_chart_copies_are_byte_identical_to_the_top_level_ones(folder: str) -> None:
    sources = sorted((REPO_ROOT / folder).glob("*.yaml"))
    assert sources, f"{folder}/ is empty"
    for source in sources:
        copy = CHART_DIR / folder / source.name
        assert copy.is_file(), f"{copy} missing: run python charts/sync.py"
        assert copy.read_bytes() == source.read_bytes(), f"{copy} drifted from {source}"


def test_check_mode_passes_on_the_committed_tree() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "charts" / "sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def sync_on_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """charts/sync.py pointed at scratch copies of its sources and of the chart's copies."""
    sync = load_sync()
    monkeypatch.setattr(sync, "REPO_ROOT", tmp_path)
    mirrors = []
    for mirror in sync.MIRRORS:
        source, target = (
            tmp_path / "src" / mirror.source.name,
            tmp_path / "chart" / mirror.target.name,
        )
        shutil.copytree(mirror.source, source)
        shutil.copytree(mirror.target, target)
        mirrors.append(sync.Mirror(source, target, mirror.chart_only))
    monkeypatch.setattr(sync, "MIRRORS", tuple(mirrors))
    rules = tmp_path / "rbac-rules.yaml"
    shutil.copy(sync.RBAC_RULES_FILE, rules)
    monkeypatch.setattr(sync, "RBAC_RULES_FILE", rules)
    return sync


def test_drift_is_reported_and_repaired(sync_on_copy: ModuleType) -> None:
    sync = sync_on_copy
    crds, examples = sync.MIRRORS
    source = next(crds.source.glob("imagequotapolicies*.yaml"))
    source.write_text(source.read_text() + "# a new field\n")
    (crds.target / "leftover.yaml").write_text("kind: Nothing\n")
    (examples.source / "new-example.yaml").write_text("kind: ImageQuotaPolicy\n")
    sync.RBAC_RULES_FILE.write_text("namespaced: []\n")
    problems = sync.stale_files(sync.MIRRORS)
    assert len(problems) == 4, problems
    assert any("leftover.yaml has no source" in p for p in problems)
    sync.write_files(sync.MIRRORS)
    assert sync.stale_files(sync.MIRRORS) == []
    assert (crds.target / source.name).read_text().endswith("# a new field\n")
    assert (examples.target / "new-example.yaml").is_file()
    assert not (crds.target / "leftover.yaml").exists()
    assert (crds.target / "kopf-peering.yaml").is_file()
    assert (examples.target / "sidecar-exporter-deployment.yaml").is_file()
