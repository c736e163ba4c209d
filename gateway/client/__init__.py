"""The caller's side: a Python client for the gateway (`calls`) and the
`chert-gateway send` command (`commands`).

    from gateway.client import GatewayClient
"""

from gateway.client.calls import (
    BlockingGatewayClient,
    GatewayClient,
    GatewayError,
    GatewayUnreachableError,
    NotAGatewayError,
    Retry,
)

__all__ = [
    "BlockingGatewayClient",
    "GatewayClient",
    "GatewayError",
    "GatewayUnreachableError",
    "NotAGatewayError",
    "Retry",
]
