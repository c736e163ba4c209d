"""The egress proxy to Chert, if any, read once at start.

HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured as every HTTP tool reads
them (a CONNECT tunnel for https; the proxy's credentials from its URL, or
from ~/.netrc). aiohttp's `trust_env` would read them again, and ~/.netrc
with them, in a worker thread on every call: half the CPU of a small
upload (docs/performance.md). The gateway calls one origin only, so once
is enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL


@dataclass(frozen=True)
class Egress:
    """How calls to Chert leave: through `proxy` (None: direct), with these
    headers to the proxy (its credentials)."""

    proxy: URL | None = None
    proxy_headers: dict[str, str] = field(default_factory=dict)


def egress_for(chert: URL) -> Egress:
    """The way out to `chert`, from the environment."""
    try:
        proxy, auth = get_env_proxy_for_url(chert)
    except LookupError:  # no proxy set for its scheme, or NO_PROXY names it
        return Egress()
    headers = {"Proxy-Authorization": auth.encode()} if auth is not None else {}
    return Egress(proxy, headers)
