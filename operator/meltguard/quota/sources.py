"""Where limits come from: ``quotas.json`` files on disk, or ConfigMaps through the API.

Both feed a :class:`~meltguard.quota.limits.LimitsRegistry` one document per source. A
document that fails to parse is logged, counted (``meltguard_quota_limit_reloads_total
{result="invalid"}``) and ignored: that source's last good document stays in force. So does
a file that disappears (an ``rm`` by mistake, a ConfigMap key briefly missing during an
update): limits are withdrawn only by an explicit empty document, ``{}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from meltguard.api.quotas import QuotaDocument, QuotaDocumentInvalid, parse_quota_document
from meltguard.quota.limits import LimitsRegistry

log = logging.getLogger(__name__)

#: Called with "ok" or "invalid" after each attempt to load a document.
ReloadCounter = Callable[[str], None]


def load_document(
    source: str, raw: str | bytes, registry: LimitsRegistry, count: ReloadCounter
) -> bool:
    """Parse ``raw`` and publish it as ``source``'s document; keep the old one if it is bad;
    withdraw it when ``raw`` is the empty document ``{}``."""
    if _is_empty_document(raw):
        log.warning("%s is the empty document {}; withdrawing its limits", source)
        registry.remove(source)
        count("ok")
        return True
    try:
        document: QuotaDocument = parse_quota_document(raw)
    except QuotaDocumentInvalid as error:
        kept = "keeping its last good limits" if source in registry.sources else "no limits from it"
        log.error("ignoring %s: %s (%s)", source, error, kept)
        count("invalid")
        return False
    registry.put(source, document)
    count("ok")
    return True


def _is_empty_document(raw: str | bytes) -> bool:
    try:
        return bool(json.loads(raw) == {})
    except ValueError:  # not JSON (UnicodeDecodeError included): the parser says why
        return False


def _json_files(root: Path) -> Iterator[Path]:
    """``root`` itself, or the ``*.json`` files under it, skipping dot-entries.

    Kubernetes mounts a ConfigMap as symlinks into a hidden ``..data`` folder, swapped
    atomically on update; following the visible links and skipping the hidden folders
    sees each key once.
    """
    if root.is_file():
        yield root
        return
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(folder, name)


class FileLimitsSource:
    """``--limits PATH``: a ``quotas.json`` file or a folder of them, re-read when changed.

    A change is seen by polling each file's (inode, mtime, size) every ``interval_seconds``,
    which catches both in-place writes and the kubelet's symlink swap; a file that disappears
    keeps its last limits in force (logged once), until it comes back or says ``{}``.
    """

    def __init__(
        self,
        path: Path,
        registry: LimitsRegistry,
        count: ReloadCounter,
        interval_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self.registry = registry
        self.count = count
        self.interval_seconds = interval_seconds
        self._seen: dict[str, tuple[int, int, int]] = {}

    def scan(self) -> None:
        """Load every new or changed file; forget the vanished ones, keeping their limits."""
        present: set[str] = set()
        for file in _json_files(self.path) if self.path.exists() else ():
            source = str(file)
            try:
                stat = file.stat()
                fingerprint = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if self._seen.get(source) != fingerprint:
                    self._seen[source] = fingerprint
                    load_document(source, file.read_bytes(), self.registry, self.count)
            except OSError as error:  # vanished between listing and reading, unreadable
                log.warning("cannot read %s: %s", file, error)
                continue
            present.add(source)
        for source in set(self._seen) - present:
            del self._seen[source]
            if source in self.registry.sources:
                log.warning(
                    "limits file %s is gone; its last limits stay in force until it comes "
                    "back or is replaced by the empty document {}",
                    source,
                )

    async def run(self) -> None:
        """Scan forever (the first scan is the caller's, before serving)."""
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                self.scan()
            except Exception:  # one bad scan must not end reloading
                log.exception("scanning %s failed", self.path)
