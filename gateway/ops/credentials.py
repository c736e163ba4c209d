"""Secrets that may live in a file and change under a running process.

Kubernetes rotates a mounted Secret by swapping the file behind a symlink; a
`Credential` notices the new modification time and re-reads it, so rotation
needs no restart. The value never shows in a repr, a log line or a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
from pathlib import Path

# How often, at most, the file is stat()ed: once a second is quick enough for a
# rotation and keeps a syscall off every request.
RECHECK_SECONDS = 1.0
# Values a rotation replaced, still remembered so they can be kept out of
# answers and logs (a peer may quote the old one for a while).
REMEMBERED_PREVIOUS = 4


# `name:token` in a list of client tokens names the caller that holds it.
NAMED_TOKEN_RE = re.compile(r"^([a-z][a-z0-9_-]{0,31}):(.+)$")


class CredentialError(Exception):
    pass


class Credential:
    """A secret given inline or as a file path; `values()` is the current set."""

    def __init__(
        self, *, inline: str | None = None, path: Path | None = None, many: bool = False
    ) -> None:
        if (inline is None) == (path is None):
            raise ValueError("give exactly one of inline or path")
        self._path = path
        self._many = many
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self._values: tuple[str, ...] = ()
        self._names: tuple[str, ...] = ()  # each value's caller ("" when unnamed)
        self._previous: tuple[str, ...] = ()
        if inline is not None:
            self._values, self._names = self._parse(inline)
        else:
            self._reload()

    def __repr__(self) -> str:
        source = f"file {self._path}" if self._path else "inline"
        return f"Credential({source}, redacted)"

    def _parse(self, text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(values, their callers' names): a list item `name:token` names its caller."""
        if self._many:
            items = [item.strip() for item in text.replace("\n", ",").split(",")]
        else:
            items = [text.strip()]
        values, names = [], []
        for item in items:
            named = NAMED_TOKEN_RE.match(item) if self._many else None
            name, value = (named[1], named[2].strip()) if named else ("", item)
            if value:
                values.append(value)
                names.append(name)
        if not values:
            raise CredentialError("is empty")
        return tuple(values), tuple(names)

    def _reload(self) -> None:
        assert self._path is not None
        try:
            st = self._path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
            if stamp != self._stamp:
                values, names = self._parse(self._path.read_text(encoding="utf-8"))
                replaced = tuple(v for v in self._values if v not in values)
                self._previous = (replaced + self._previous)[:REMEMBERED_PREVIOUS]
                self._values, self._names = values, names
                self._stamp = stamp
        except OSError as exc:
            raise CredentialError(f"cannot read {self._path}: {exc.strerror}") from None

    def values(self, now: float) -> tuple[str, ...]:
        """The current value(s); re-reads the file when it changed.

        A file that vanishes or turns empty mid-rotation keeps the last good
        value rather than locking everyone out.
        """
        if self._path is not None and now - self._checked_at >= RECHECK_SECONDS:
            self._checked_at = now
            with contextlib.suppress(CredentialError):
                self._reload()
        return self._values

    def known_values(self, now: float) -> tuple[str, ...]:
        """The current value(s) and the last few that a rotation replaced."""
        return self.values(now) + self._previous

    def current(self, now: float) -> str:
        return self.values(now)[0]

    def matches(self, candidate: str, now: float) -> bool:
        """Constant-time comparison against every current value."""
        return self.caller(candidate, now) is not None

    def caller(self, candidate: str, now: float) -> str | None:
        """The name of the caller whose value `candidate` is ("" for an
        unnamed one), or None; constant-time against every current value."""
        given = candidate.encode()
        found: str | None = None
        values = self.values(now)
        for value, name in zip(values, self._names, strict=True):
            # No early exit: every token costs the same time, found or not.
            if hmac.compare_digest(given, value.encode()):
                found = name
        return found

    def names(self, now: float) -> frozenset[str]:
        """The callers named now (for bounded metric labels)."""
        self.values(now)
        return frozenset(name for name in self._names if name)


def from_env_pair(inline: str | None, path: str | None, *, many: bool = False) -> Credential | None:
    """The credential named by a `NAME` / `NAME_FILE` pair of settings."""
    if inline and path:
        raise CredentialError("set either the value or the _FILE form, not both")
    if path:
        return Credential(path=Path(os.path.expanduser(path)), many=many)
    if inline:
        return Credential(inline=inline, many=many)
    return None
