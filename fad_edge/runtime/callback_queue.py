"""Calls a user's callback on its own thread from a bounded queue, so a slow callback never holds up the stream.

When the queue is full the oldest waiting item is dropped (a robot wants the newest motion) and
counted; an exception from the callback (any, `SystemExit` included) is counted, the first one is
logged with its traceback (the `logging` module), and the next item is delivered.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
log = logging.getLogger(__name__)


class CallbackQueue(Generic[Item]):
    def __init__(self, callback: Callable[[Item], None] | None, size: int = 16, name: str = "callbacks") -> None:
        if size < 1:
            raise ValueError(f"the callback queue needs room for at least one item, got {size}")
        self.callback, self.size = callback, size
        self.dropped = 0  # items dropped because the queue was full, or still queued when closed
        self.errors = 0  # items whose callback raised
        self.delivered = 0
        self._items: collections.deque[Item] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        if callback is not None:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def put(self, item: Item) -> None:
        """Queue an item without waiting."""
        if self.callback is None:
            return
        with self._ready:
            if len(self._items) >= self.size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify()

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds; what is left then counts as dropped."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is threading.current_thread():
            return  # closed from inside the callback: the thread delivers what is queued once it returns
        if self._thread is not None:
            self._thread.join(timeout)
        with self._ready:
            self.dropped += len(self._items)
            self._items.clear()

    def _run(self) -> None:
        assert self.callback is not None
        while True:
            with self._ready:
                while not self._items and not self._closing:
                    self._ready.wait()
                if not self._items:
                    return
                item = self._items.popleft()
            try:
                self.callback(item)
            except BaseException as error:  # the caller's bug must not stop the deliveries: counted, the first logged
                with self._ready:
                    self.errors += 1
                    first = self.errors == 1
                if first:
                    log.error("the callback %r raised; later errors are only counted", self.callback, exc_info=error)
            with self._ready:
                self.delivered += 1
