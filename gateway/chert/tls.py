"""The TLS the gateway speaks to Chert: always verified, sessions resumed.

The system's trust store is the base (Python's default verify paths, so
`SSL_CERT_FILE` and `SSL_CERT_DIR` work as for every tool); `CHERT_CA_FILE`
adds a PEM bundle to it (a corporate CA, the simulator's throwaway CA).
There is no setting that turns verification off.

A new connection to Chert resumes the TLS session of an earlier one
(`ResumingContext`): the server skips its certificate and key exchange
signature, and the client the chain's verification. asyncio's TLS
transport has no place to pass a session, so the context hands it over
itself when asyncio asks it for a TLS object.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from collections import deque
from pathlib import Path

# The TLS objects a session may be taken from, per server name: the newest.
RECENT_OBJECTS = 4


class ResumingContext(ssl.SSLContext):
    """A client context whose new TLS objects resume the latest session
    another of its objects negotiated with the same server name."""

    def __init__(self, protocol: int) -> None:
        # ssl.SSLContext takes `protocol` in __new__.
        super().__init__()
        self._sessions: dict[str | None, ssl.SSLSession] = {}
        # Kept, not weakly: a connection a load balancer closed is gone by
        # the time its successor is made, and its ticket with it.
        self._recent: dict[str | None, deque[ssl.SSLObject]] = {}

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = self._session_for(server_hostname)
        tls = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        recent = self._recent.setdefault(server_hostname, deque(maxlen=RECENT_OBJECTS))
        recent.append(tls)
        return tls

    def _session_for(self, name: str | None) -> ssl.SSLSession | None:
        """The newest resumable session with `name`, from the TLS objects
        made since the last look (a TLS 1.3 ticket comes after the handshake)."""
        for tls in self._recent.get(name, ()):
            try:
                session = tls.session
            except ValueError:  # its handshake is not done: OpenSSL cannot encode it yet
                continue
            if session is not None and session.has_ticket:
                kept = self._sessions.get(name)
                if kept is None or session.time >= kept.time:
                    self._sessions[name] = session
        kept = self._sessions.get(name)
        if kept is not None and kept.time + kept.timeout <= time.time():
            del self._sessions[name]
            return None
        return kept


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying context for Chert; raises ssl.SSLError or OSError for a
    bundle that cannot be read (config checks this at start-up)."""
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    # As ssl.create_default_context does: TLS secrets for Wireshark, on request.
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    return context
