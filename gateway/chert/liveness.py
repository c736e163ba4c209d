"""Is a pooled connection still alive? Its TCP peer says so by acknowledging.

A connection that Chert's side has forgotten looks alive until something is
sent on it: the answer to the first bytes is then a reset instead of an
acknowledgement, one round trip later. Before a streamed PUT takes more of
the caller's body than it holds, on a connection that sat idle, it waits
for that answer (`Probe`): an acknowledgement of any of its bytes means
Chert took them and the PUT goes on; a reset or a close before one means
Chert took nothing, and the PUT can start over on a fresh connection.

It reads the kernel's view of the socket (Linux: TCP_INFO's state and
bytes acknowledged). Elsewhere it cannot tell, and says the connection is
alive, which is the behaviour without it. Through an egress proxy the
acknowledgement is the proxy's, which proves only the first leg.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Any

TCP_ESTABLISHED = 1
# struct tcp_info (linux/tcp.h): tcpi_state is its first byte, and
# tcpi_bytes_acked (Linux 4.1 and later) the u64 at this offset.
BYTES_ACKED_OFFSET = 120
TCP_INFO_BYTES = BYTES_ACKED_OFFSET + 8
# The wait between looks at the socket: short at first (a loopback or LAN
# answers in microseconds), then no more than this.
FIRST_LOOK_SECONDS = 0.0002
MAX_LOOK_SECONDS = 0.005


class Probe:
    """Made before the first bytes are written to `transport`; `answered()`
    after, to learn whether the peer took any of them."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._sock: Any = sock if sys.platform == "linux" else None
        self._acked_before = 0
        if self._sock is not None:
            try:
                self._acked_before = self._read()[1]
            except OSError:
                self._sock = None

    def _read(self) -> tuple[int, int]:
        """(TCP state, bytes acknowledged so far) of the socket."""
        info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
        if len(info) < TCP_INFO_BYTES:
            raise OSError("this kernel's tcp_info has no bytes_acked")
        return info[0], struct.unpack_from("Q", info, BYTES_ACKED_OFFSET)[0]

    async def answered(self) -> bool:
        """True once the peer acknowledges a byte written since the probe
        was made; False when the connection is reset or closed before that.

        It does not time out: the PUT's progress deadline bounds it.
        """
        if self._sock is None:
            return True
        look = FIRST_LOOK_SECONDS
        while True:
            try:
                state, acked = self._read()
            except OSError:
                return False
            # Acknowledged, even if reset since: Chert took bytes.
            if acked > self._acked_before:
                return True
            if state != TCP_ESTABLISHED or self._transport.is_closing():
                return False
            await asyncio.sleep(look)
            look = min(look * 2, MAX_LOOK_SECONDS)
