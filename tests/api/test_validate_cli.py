"""`meltguard validate` as a user runs it: exit codes, one line per object, named fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .cases import BROKEN, EXAMPLES


def validate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meltguard.cli", "validate", *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_examples_pass_with_one_summary_line_per_object() -> None:
    args = [arg for example in EXAMPLES for arg in ("-f", str(example))]
    result = validate(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXAMPLES)
    assert all(line.startswith("ok ") for line in lines)
    assert "inference/imagegen: Deployment/imagegen-worker, replicas 2..64" in result.stdout


def test_broken_policies_fail_naming_object_and_field_without_traceback(tmp_path: Path) -> None:
    documents = [case[1] for case in BROKEN]
    for index, document in enumerate(documents):
        document["metadata"]["name"] = f"broken-{index}"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = validate("-f", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for index, (_, _, field, words, _) in enumerate(BROKEN):
        assert f"inference/broken-{index}: {field}: " in result.stderr
        assert words in result.stderr


def test_stdin_multi_document_mixing_good_and_bad() -> None:
    text = EXAMPLES[0].read_text() + "\n---\n" + yaml.safe_dump(BROKEN[0][1])
    result = validate("-f", "-", stdin=text)
    assert result.returncode == 1
    assert result.stdout.count("ok ") == 1
    assert "spec.minReplicas" in result.stderr


def test_unreadable_and_malformed_files_are_errors_not_tracebacks(tmp_path: Path) -> None:
    missing = validate("-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "No such file" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    malformed = validate("-f", str(bad))
    assert malformed.returncode == 1 and "not valid YAML at line" in malformed.stderr
    scalar = validate("-f", "-", stdin="just a string\n")
    assert scalar.returncode == 1 and "must be a mapping" in scalar.stderr
    assert "Traceback" not in missing.stderr + malformed.stderr + scalar.stderr
