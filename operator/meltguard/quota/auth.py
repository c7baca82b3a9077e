"""Caller authentication: bearer tokens read from a file, each naming one caller.

The file (``--auth-tokens``) holds one ``caller-name:token`` per line; blank lines and lines
starting with ``#`` are skipped. It is read again when its modification time or size changes
(a mounted Secret is replaced, not edited); a new version that does not parse keeps the last
good tokens in force, with a log line. Tokens are kept only as SHA-256 digests, so looking one
up costs the same whichever token is sent and a memory dump shows none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: A caller's name: what the quota service records with each request it consumed.
CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: Tokens shorter than this are refused: guessable.
MIN_TOKEN_LENGTH = 16
#: Seconds between two looks at the file's modification time.
RECHECK_SECONDS = 1.0


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, source: str) -> dict[bytes, str]:
    """Token digest -> caller name, or ValueError naming ``source``'s bad line."""
    callers: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.partition(":")
        where = f"{source} line {number}"
        if not colon:
            raise ValueError(f"{where}: expected caller-name:token")
        if CALLER_NAME.fullmatch(name) is None:
            raise ValueError(
                f"{where}: caller name {name!r} must be 1 to 63 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"{where}: the token of {name} is shorter than {MIN_TOKEN_LENGTH}")
        digest = _digest(token)
        if digest in callers:
            raise ValueError(f"{where}: the token of {name} is also {callers[digest]}'s")
        callers[digest] = name
    if not callers:
        raise ValueError(f"{source}: no caller-name:token line")
    return callers


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Unauthenticated(LookupError):
    """A request without a known caller token; the message says whether it sent none
    (``no bearer token``) or one that is not a caller's (``unknown token or scheme``)."""


class TokenFile:
    """The callers of ``path``, read at construction (ValueError when it cannot be) and
    again on change, checked at most every ``RECHECK_SECONDS``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = self._stat()
        self._callers = parse_tokens(self._read(), str(path))
        self._checked_at = time.monotonic()

    def _stat(self) -> tuple[int, int]:
        try:
            status = os.stat(self.path)
        except OSError as error:
            raise ValueError(f"--auth-tokens {self.path}: {error.strerror}") from None
        return status.st_mtime_ns, status.st_size

    def _read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--auth-tokens {self.path}: {error}") from None

    def _refresh(self) -> None:
        """Re-read the file if it changed; keep the last good callers if it went bad."""
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            self._signature = signature
            self._callers = parse_tokens(self._read(), str(self.path))
        except ValueError as error:
            log.error("%s; keeping the %d callers read before", error, len(self._callers))
            return
        log.info("read %d callers from %s", len(self._callers), self.path)

    def caller(self, token: str | None) -> str | None:
        """The name of the caller whose token this is, or None."""
        now = time.monotonic()
        if now - self._checked_at >= RECHECK_SECONDS:
            self._checked_at = now
            self._refresh()
        if token is None:
            return None
        return self._callers.get(_digest(token))

    def authenticate(self, authorization: str | None) -> str:
        """The name of the caller an ``Authorization`` value (HTTP header or gRPC metadata)
        speaks for, or :class:`Unauthenticated`."""
        caller = self.caller(bearer_token(authorization))
        if caller is None:
            raise Unauthenticated(
                "no bearer token" if authorization is None else "unknown token or scheme"
            )
        return caller
