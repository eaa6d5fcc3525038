"""State a transport keeps per owner object (a node, an event loop), found cheaply for the last owner.

Transports keep a few things per node or per loop that the owner itself does not
know about (the node knows no sockets): the open-connection count, the connections
handed over from aiohttp, the writers' flusher. A :class:`weakref.WeakKeyDictionary`
keeps them for as long as the owner lives, but every lookup makes a weak reference
and runs Python code, several times per connect. A process almost always has one
node and one loop, so :class:`PerOwner` answers for the owner asked about last from
a one-entry cache first.

The cache holds the last owner weakly and its value strongly: a value that refers to
its owner (a loop's flushers refer to the loop) keeps that one owner alive until
another owner is asked about.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class PerOwner(Generic[K, V]):
    """``per_owner(owner)``: the owner's value, made by ``make()`` on first use; ``get``: without making it."""

    __slots__ = ("_last", "_make", "_values")

    def __init__(self, make: Callable[[], V]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[K, V] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[K], V] | None = None

    def __call__(self, owner: K) -> V:
        last = self._last
        if last is not None and last[0]() is owner:
            return last[1]
        value = self._values.get(owner)
        if value is None:
            value = self._values[owner] = self._make()
        self._last = (weakref.ref(owner), value)
        return value

    def get(self, owner: K) -> V | None:
        last = self._last
        if last is not None and last[0]() is owner:
            return last[1]
        return self._values.get(owner)
