"""Turn SIGINT/SIGTERM into a flag, so a training loop can checkpoint and stop cleanly."""

from __future__ import annotations

import signal
import threading


class GracefulStop:
    """Context manager: while active, the first SIGINT/SIGTERM sets ``requested`` instead of
    killing the process; a second one interrupts as usual. The loop checks ``requested``,
    writes its checkpoint and returns.

    >>> with GracefulStop() as stop:
    ...     while not stop.requested: ...
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: give up on a clean stop
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
