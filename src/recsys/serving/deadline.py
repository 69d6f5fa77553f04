"""A binding deadline on the calling thread: ``SIGALRM`` interrupts the work at its deadline.

The HTTP service's event loop runs on each worker's main thread. Handing retrieval and ranking
to a stage thread made the budget binding, but the stages are CPU-bound under the same GIL as
the loop, so every socket read or Redis reply of the loop waited for the stage thread to drop
the GIL (up to the 5 ms switch interval): measured on ml-latest-small with two workers at
250 requests/s, p99 59 ms with the stage thread against 33 ms with the stages on the loop
(``RECSYS_DEADLINE=thread|alarm recsys bench serve``).

:func:`deadline` keeps the stages on the loop's thread and still binds: an interval timer
(``setitimer(ITIMER_REAL)``, wall clock) raises :class:`DeadlineExceeded` inside whatever
Python code is running when the deadline passes — a loop, or a ``time.sleep``, which a
signal interrupts. Code inside one C call (one FAISS search, one Numba kernel) is interrupted
when that call returns. Only the main thread receives signals, so :func:`available` says
whether the calling thread can use it (else the engine falls back to its stage thread).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["DeadlineExceeded", "available", "deadline", "shielded"]


class DeadlineExceeded(BaseException):
    """Raised into the running stage at its deadline.

    A ``BaseException``: the stages' ``except Exception`` handlers (which turn a failing
    stage into a degraded answer) must not take a deadline for a failure.
    """


_armed = False
_shield_depth = 0
_pending = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    global _pending
    if not _armed:  # a late signal after the block ended is ignored
        return
    if _shield_depth:
        _pending = True  # raised when the shielded section ends
        return
    raise DeadlineExceeded


class shielded:  # noqa: N801 - used as a statement, like contextlib.suppress
    """Defer a deadline that falls inside this block to its end.

    For the few critical sections under a deadline (a lock held, a shared cache half
    updated), which an exception at an arbitrary bytecode would leave locked or torn.
    Re-entrant; free outside a deadline.
    """

    def __enter__(self) -> None:
        global _shield_depth
        _shield_depth += 1

    def __exit__(self, *exc: object) -> None:
        global _shield_depth, _pending
        _shield_depth -= 1
        if not _shield_depth and _pending:
            _pending = False
            if _armed and exc[0] is None:
                raise DeadlineExceeded


def available() -> bool:
    """Whether :func:`deadline` works here: Unix, the main thread, ``SIGALRM`` free or ours."""
    if not hasattr(signal, "setitimer"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGALRM)
    if current is _on_alarm:
        return True
    if current not in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False  # someone else's alarm: leave it alone
    signal.signal(signal.SIGALRM, _on_alarm)
    return True


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Run the block under a deadline ``seconds`` from now; raises :class:`DeadlineExceeded`.

    Call only where :func:`available` is true. Not re-entrant (one timer per process): the
    engine runs one request's stages at a time on the loop's thread.
    """
    global _armed, _pending
    if seconds <= 0.0:
        raise DeadlineExceeded
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _armed = False
        _pending = False
        signal.setitimer(signal.ITIMER_REAL, 0.0)
