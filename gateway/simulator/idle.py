"""Idle keep-alive connections dropped the two ways load balancers drop them.

    close   the connection is closed: a FIN, which a client may notice before
            it reuses the connection (aiohttp does, when the FIN arrived first)
    forget  the connection's state is thrown away and nothing is sent: the
            next request on it reaches a host that no longer knows it, and
            is answered with a reset, not an acknowledgement

`forget` closes the socket in TCP repair mode (Linux, CAP_NET_ADMIN), which
sends neither FIN nor RST: the kernel then resets whatever arrives for it,
as a load balancer that lost the flow does. Without the capability the
socket is reset at once instead, which a client notices like a FIN; one
warning says so.

A connection counts as idle from the end of its last request; a new request
on it before `after` seconds keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Literal

from aiohttp import web

log = logging.getLogger("gateway.simulator")

DropHow = Literal["close", "forget"]
DROP_WAYS: tuple[DropHow, ...] = ("close", "forget")
TCP_REPAIR = 19  # linux/tcp.h; Python's socket module does not name it


class IdleDropper:
    """Drops the connections left idle for as long as the faults say."""

    def __init__(self) -> None:
        self.dropped = 0
        self._timers: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self._warned = False

    def request_started(self, request: web.Request) -> None:
        if request.transport is not None and (timer := self._timers.pop(request.transport, None)):
            timer.cancel()

    def request_ended(self, request: web.Request, after: float | None, how: DropHow) -> None:
        """Drop the request's connection `how` once it has been idle `after` s."""
        transport = request.transport
        if after is None or transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        self._timers[transport] = loop.call_later(after, self._drop, transport, how)

    def _drop(self, transport: asyncio.BaseTransport, how: DropHow) -> None:
        self._timers.pop(transport, None)
        if transport.is_closing():
            return
        self.dropped += 1
        if how == "close":
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "forgetting a connection needs CAP_NET_ADMIN (%s); resetting it instead", exc
                )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert isinstance(transport, asyncio.WriteTransport)
        transport.abort()
