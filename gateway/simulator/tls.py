"""HTTPS for the simulator, so the production leg (TLS with verification)
can be rehearsed: a throwaway CA and a server certificate for 127.0.0.1 and
localhost (trustme, made for exactly this), or your own certificate.

trustme is an optional extra (`pip install 'chert-gateway[simulator-tls]'`):
the gateway itself never needs it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


def throwaway(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context signed by a new CA, and the CA's PEM file in `directory`."""
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "simulate --tls needs trustme: pip install 'chert-gateway[simulator-tls]' "
            "(or give --tls-cert and --tls-key)"
        ) from None
    authority = trustme.CA(organization_name="chert-gateway simulator")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*SERVER_NAMES).configure_cert(context)
    ca_path = directory / "chert-simulator-ca.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    return context, ca_path


def from_files(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context from your own certificate chain and key (PEM)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
