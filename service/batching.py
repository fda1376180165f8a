"""Adaptive batching: concurrent requests for one model run as one onnxruntime call.

A request's rows wait in the model's `Batcher` until the waiting rows reach `max_size` or the
first of them has waited `max_delay` seconds; then every waiting request runs in one call on
the event loop and each gets back exactly its own rows. Requests are decoded and checked before
they are submitted, so bad rows never join a batch; should the model itself fail, every request
of that batch gets the error, and should a request's answer fail (a V2 output name the model
does not offer is found there), the requests asking alike get that error.

With `max_delay` 0 the batch runs on the next event-loop turn, or a few turns later (`YIELDS`)
while every turn brings more requests: only requests already scheduled or just arrived join it,
so a lone request is not held back, though it yields the loop once. So with delay 0 the batcher
watches what its batches catch: after `LONE` batches in a row of a single request it runs
requests straight away, still yielding on every `PROBE`th one, and the first batch that catches
more than one request turns yielding back on.

What a request gets back is `post` applied to its rows of the model's output: the answer its
protocol makes of them (`tasks.postprocess` for /predict, `named.outputs` for V2 and TF
Serving), a `functools.partial`. A `post` works row by row, so requests with equal posts share
one call over the batch's output and each takes its slice of the result.

NOTE: one call for many requests pays the fixed cost of entering onnxruntime (and of the answer
made of its output) once; bench/README.md has what that is worth. A row's output alone and
inside a batch is bit-identical for the bundled models where checked; onnxruntime does not
promise it for every graph and CPU, where the last bits may differ with the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np


LONE = 8  # batches of one request in a row after which a delay-0 batcher runs requests straight away
PROBE = 16  # ... yielding on every PROBE-th request still, to notice concurrency
YIELDS = 4  # most event-loop turns a delay-0 batch waits for, while each turn adds requests to it

Post = Callable[[np.ndarray], Any]  # output rows -> the answer, row by row (see the module)


def rows(out: np.ndarray) -> np.ndarray:
    """The output rows themselves: the post of a caller that wants no answer made of them."""
    return out


def same(a: Post, b: Post) -> bool:
    """Whether two posts give the same answer: the same partial of the same arguments."""
    if a is b:
        return True
    if type(a) is not partial or type(b) is not partial:
        return False
    return a.func is b.func and a.args == b.args and a.keywords == b.keywords


def take(result: Any, start: int, stop: int) -> Any:
    """Rows `start:stop` of what a post returned: a list or array per row, or a dict of them
    (or of such dicts)."""
    if type(result) is dict:
        return {name: take(value, start, stop) if type(value) is dict else value[start:stop]
                for name, value in result.items()}
    return result[start:stop]


class Batcher:
    """Collect rows from concurrent `submit` calls and run them together."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_size: int, max_delay: float):
        self.run = run
        self.max_size = max_size
        self.max_delay = max_delay
        self._waiting: list[tuple[np.ndarray, Post, asyncio.Future]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self.lone = 0  # batches in a row that held a single request
        self._straight = 0  # requests run straight away since the last probe

    async def submit(self, x: np.ndarray, post: Post = rows) -> Any:
        """Run `x` ([rows, n_features]) in the next batch; returns `post` of its output rows."""
        if self.lone >= LONE and not self._waiting and self.max_delay <= 0:
            self._straight += 1
            if self._straight % PROBE:
                return post(self.run(x))  # requests have been coming one at a time: no yield
        loop = asyncio.get_running_loop()
        if self._rows and self._rows + len(x) > self.max_size:
            self.flush()  # x would overfill the batch: run what waits, x starts the next one
        future = loop.create_future()
        leader = not self._waiting
        self._waiting.append((x, post, future))
        self._rows += len(x)
        if self._rows >= self.max_size:
            self.flush()
        elif self.max_delay > 0:
            if self._timer is None:
                self._timer = loop.call_later(self.max_delay, self.flush)
        elif leader:
            # Delay 0: the first request yields, so that requests already scheduled on the loop reach
            # this batcher too, and yields again while others keep joining (requests whose bytes
            # arrive meanwhile: each turn polls the sockets), then runs whatever waits. No timer.
            try:
                waiting = 1
                for _ in range(YIELDS):
                    await asyncio.sleep(0)
                    if future.done() or len(self._waiting) <= waiting:
                        break  # nobody joined during this turn (or the batch has run already)
                    waiting = len(self._waiting)
            finally:
                self.flush()  # also when cancelled: the others of its batch still get their rows
            return future.result()
        return await future

    def flush(self) -> None:
        """Run everything waiting now, as one call, and hand each request its rows."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting, self._rows = self._waiting, [], 0
        if not waiting:
            return
        self.lone = self.lone + 1 if len(waiting) == 1 else 0
        try:
            out = self.run(waiting[0][0] if len(waiting) == 1 else np.concatenate([x for x, _, _ in waiting]))
            groups = _groups(waiting)
        except Exception as exc:  # the model (or telling posts apart) failed: the whole batch shares the error
            _fail([future for _, _, future in waiting], exc)
            return
        for post, members in groups:
            try:
                rows = out if len(members) == len(waiting) else np.concatenate([out[a:b] for a, b, _ in members])
                result = post(rows)
                offset = 0
                for a, b, future in members:
                    if not future.done():  # a cancelled request (client gone, deadline) is skipped
                        future.set_result(result if len(members) == 1 else take(result, offset, offset + b - a))
                    offset += b - a
            except Exception as exc:  # noqa: BLE001 - the answer failed: its group shares the error
                _fail([future for _, _, future in members], exc)


def _groups(waiting: list) -> list[tuple[Post, list[tuple[int, int, asyncio.Future]]]]:
    """The waiting requests by `post` (in order of first appearance), each member with its rows
    `start:stop` of the batch output and its future; usually there is one group."""
    groups: list[tuple[Post, list[tuple[int, int, asyncio.Future]]]] = []
    start = 0
    for x, post, future in waiting:
        for known, members in groups:
            if same(known, post):
                break
        else:
            members = []
            groups.append((post, members))
        members.append((start, start + len(x), future))
        start += len(x)
    return groups


def _fail(futures: list[asyncio.Future], exc: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
