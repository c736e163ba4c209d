"""Keeping secrets out of what the gateway says.

Chert, or a proxy in front of it, may quote the request it was sent, bearer
secret and all, in an error message, a header or a JSON answer. Whatever of
Chert's reaches a caller or a log line goes through a `Redactor` first
(`chert.py` applies it where Chert's answers become the gateway's). It
knows every value that must never leave: the signing secret (current and
the ones a rotation replaced) and the client tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from gateway.ops.credentials import Credential

REDACTED = "[redacted]"


class Redactor:
    def __init__(self, credentials: Iterable[Credential | None]) -> None:
        self._credentials = [c for c in credentials if c is not None]

    def _secrets(self) -> list[str]:
        now = time.monotonic()
        found = {value for c in self._credentials for value in c.known_values(now)}
        # Longest first, so a secret that contains another is replaced whole.
        return sorted(found, key=len, reverse=True)

    def text(self, value: str) -> str:
        redacted: str = _walk(value, self._secrets())
        return redacted

    def json(self, value: Any) -> Any:
        """A parsed JSON value with every string (keys too) redacted."""
        return _walk(value, self._secrets())


def _walk(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_walk(k, secrets): _walk(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(item, secrets) for item in value]
    return value
