"""Runtime helpers: torch thread count scoped to a call, device handling."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the old count after.

    On the project's 2-core machines the small matrix products of these models run fastest
    on one thread (two threads were 2-100x slower, measured); ``None`` leaves torch alone.
    """
    if not n:
        yield
        return
    old = torch.get_num_threads()
    if old == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def with_config_threads(method: F) -> F:
    """Decorate a method of an object whose ``config.num_threads`` scopes torch threads."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(getattr(self.config, "num_threads", None)):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
