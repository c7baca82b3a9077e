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


def test_chart_crds_are_byte_identical_to_the_top_level_ones() -> None:
    sources = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    assert sources, "crds/ is empty"
    for source in sources:
        copy = CHART_DIR / "crds" / source.name
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
    """charts/sync.py pointed at a scratch copy of crds/ and the chart's crds/ and files/."""
    sync = load_sync()
    monkeypatch.setattr(sync, "REPO_ROOT", tmp_path)
    for attr, source in [
        ("SOURCE_CRDS_DIR", REPO_ROOT / "crds"),
        ("CHART_CRDS_DIR", CHART_DIR / "crds"),
    ]:
        target = tmp_path / attr.lower()
        shutil.copytree(source, target)
        monkeypatch.setattr(sync, attr, target)
    rules = tmp_path / "rbac-rules.yaml"
    shutil.copy(CHART_DIR / "files" / "rbac-rules.yaml", rules)
    monkeypatch.setattr(sync, "RBAC_RULES_FILE", rules)
    return sync


def test_drift_is_reported_and_repaired(sync_on_copy: ModuleType) -> None:
    sync = sync_on_copy
    source = next(sync.SOURCE_CRDS_DIR.glob("imagequotapolicies*.yaml"))
    source.write_text(source.read_text() + "# a new field\n")
    (sync.CHART_CRDS_DIR / "leftover.yaml").write_text("kind: Nothing\n")
    sync.RBAC_RULES_FILE.write_text("namespaced: []\n")
    problems = sync.stale_files()
    assert len(problems) == 3, problems
    assert any("leftover.yaml has no source" in p for p in problems)
    sync.write_files()
    assert sync.stale_files() == []
    assert (sync.CHART_CRDS_DIR / source.name).read_text().endswith("# a new field\n")
    assert (sync.CHART_CRDS_DIR / "kopf-peering.yaml").is_file()
