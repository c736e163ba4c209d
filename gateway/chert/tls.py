"""The TLS the gateway speaks to Chert: always verified.

The system's trust store is the base (Python's default verify paths, so
`SSL_CERT_FILE` and `SSL_CERT_DIR` work as for every tool); `CHERT_CA_FILE`
adds a PEM bundle to it (a corporate CA, the simulator's throwaway CA).
There is no setting that turns verification off.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying context for Chert; raises ssl.SSLError or OSError for a
    bundle that cannot be read (config checks this at start-up)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context
