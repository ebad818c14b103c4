"""A small bounded memo: what is worked out from a value, remembered by a key that names it.

The jobs of one campaign send the same model with every fit, so a model's checks, walks and JSON
text are remembered by the bytes it came as (``codec.Received.packed``) or by its JSON text. A
handful of distinct keys is the common case; past ``kept`` the memo starts again rather than
track use, which costs nothing per hit and bounds memory whatever a peer sends.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """``get(key, compute)``: ``compute()`` once per key, at most ``kept`` keys held at a time."""

    def __init__(self, kept: int = 256) -> None:
        self.kept = kept
        self._values: dict[K, V] = {}

    def get(self, key: K, compute: Callable[[], V]) -> V:
        try:
            return self._values[key]
        except KeyError:
            pass
        value = compute()
        if len(self._values) >= self.kept:
            self._values.clear()
        self._values[key] = value
        return value
