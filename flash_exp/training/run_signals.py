"""SIGTERM and Ctrl-C (SIGINT) in every phase of a run: model loading, the fit, its final sample grid,
the export and the evaluation after training.

:class:`StopSignals` holds the handlers of both signals for the whole run. Outside the fit a signal
raises :class:`RunInterrupted` at once (the caller marks the run INTERRUPTED and exits with 128 + the
signal number). During the fit (:meth:`StopSignals.deferred`) the signal is noted and training stops at the next step boundary,
after :class:`~flash_exp.training.signals.SignalCheckpoint` saved ``last.ckpt`` (for SIGTERM
Lightning's own handler, which calls ours too, does the same); a signal that lands after the last
step (the final grid) or before the first is raised once the fit has returned and ``last.ckpt`` is
saved. A second Ctrl-C during the fit raises ``KeyboardInterrupt`` at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """A stop signal ended the run (a ``BaseException``, as ``KeyboardInterrupt``: no ``except
    Exception`` of a phase swallows it)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """The SIGTERM and SIGINT handlers of one run; ``received`` is the first stop signal seen (or None)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferred = False

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        first = self.received is None
        if first:
            self.received = signum
        if not self._deferred:
            raise RunInterrupted(signum)
        if signum == signal.SIGINT and not first:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step to end
        log.warning("received %s: the run stops after this training step (or the final sample grid), "
                    "once last.ckpt is saved", signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle SIGTERM and SIGINT for the duration of the block (main thread only; elsewhere a no-op),
        then put the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self._handler) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """The fit: a SIGTERM is noted (Lightning stops at its step boundary), not raised; raises
        :class:`RunInterrupted` when the block ends normally after one arrived."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
        if self.received is not None:
            raise RunInterrupted(self.received)
