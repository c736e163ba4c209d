"""A deadline on progress, not on time: an upload may take as long as it
takes, but Chert must take its next chunk within `limit` seconds, and time
spent waiting for the caller's next chunk does not count against Chert.

Moving an asyncio.Timeout on every chunk costs two timers per chunk (a new
one, and a cancelled one left in the loop's heap); on a large stream that
was a tenth of the gateway's CPU. Here a chunk only notes the time; the one
timer looks when it fires and re-arms itself, about once per `limit`.
"""

from __future__ import annotations

import asyncio


class ProgressDeadline:
    """Expires `scope` (an entered asyncio.Timeout) once `limit` seconds
    pass with no progress while not waiting on the body's source."""

    def __init__(self, scope: asyncio.Timeout, limit: float) -> None:
        self._limit = limit
        self._scope = scope
        self._loop = asyncio.get_running_loop()
        self._last_progress = self._loop.time()
        self._waiting_on_source = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self._last_progress + limit, self._check
        )

    def waiting_on_source(self) -> None:
        """The body waits for its own source (the caller): the clock stops."""
        self._waiting_on_source = True

    def progressed(self) -> None:
        """A chunk is handed on: the clock starts again from now."""
        self._waiting_on_source = False
        self._last_progress = self._loop.time()

    def stop(self) -> None:
        """Call before leaving the scope."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        now = self._loop.time()
        if self._waiting_on_source:
            due = now + self._limit
        else:
            due = self._last_progress + self._limit
            if due <= now:
                self._timer = None
                # The scope's own machinery cancels the task and turns the
                # cancellation into TimeoutError as it exits.
                self._scope.reschedule(now)
                return
        self._timer = self._loop.call_at(due, self._check)
