"""A wire between two network namespaces, with a delay and a rate each way.

This kernel has no netem qdisc (`tc qdisc add … netem` answers "Specified
qdisc kind is unknown"), so the link is shaped here instead: two TUN
devices, one left outside and one moved into the namespace, and this
process carrying every IP packet from one to the other after its time on
the wire (len × 8 / rate, queued behind the packets before it) and the
delay. TCP runs end to end across it, unaware, as across a real link.

    python tests/wire.py NAMESPACE OUTER_DEV OUTER_ADDR INNER_DEV INNER_ADDR DELAY_MS RATE_MBIT

It prints `ready` once both ends are up, and runs until SIGTERM; the TUN
devices vanish with it. Run by tests/netns.py, as root.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import selectors
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
# Jumbo frames: a few thousand packets a second at 200 Mbit/s, which this
# loop carries with time to spare.
MTU = 9000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def main() -> None:
    namespace, outer, outer_addr, inner, inner_addr, delay_ms, rate_mbit = sys.argv[1:8]
    delay = float(delay_ms) / 1000
    seconds_per_byte = 8 / (float(rate_mbit) * 1e6)
    outer_fd, inner_fd = open_tun(outer), open_tun(inner)
    ip("link", "set", inner, "netns", namespace)
    ip("addr", "add", outer_addr, "peer", inner_addr, "dev", outer)
    ip("link", "set", outer, "mtu", str(MTU), "up")
    ip("-n", namespace, "addr", "add", inner_addr, "peer", outer_addr, "dev", inner)
    ip("-n", namespace, "link", "set", inner, "mtu", str(MTU), "up")
    ip("-n", namespace, "link", "set", "lo", "up")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    # Each way: the fd packets leave by, and when that side's wire is free.
    other = {outer_fd: inner_fd, inner_fd: outer_fd}
    free_at = {outer_fd: 0.0, inner_fd: 0.0}
    for fd in other:
        selector.register(fd, selectors.EVENT_READ)
    in_flight: list[tuple[float, int, int, bytes]] = []  # (arrival, order, fd, packet)
    order = 0
    print("ready", flush=True)
    while True:
        timeout = max(0.0, in_flight[0][0] - time.monotonic()) if in_flight else None
        for key, _ in selector.select(timeout):
            source = key.fd
            while True:
                try:
                    packet = os.read(source, 65536)
                except BlockingIOError:
                    break
                now = time.monotonic()
                leaves = max(now, free_at[source]) + len(packet) * seconds_per_byte
                free_at[source] = leaves
                order += 1
                heapq.heappush(in_flight, (leaves + delay, order, other[source], packet))
        now = time.monotonic()
        while in_flight and in_flight[0][0] <= now:
            _, _, target, packet = heapq.heappop(in_flight)
            # The far side down: the packet is lost, as on a wire.
            with contextlib.suppress(OSError):
                os.write(target, packet)


if __name__ == "__main__":
    main()
