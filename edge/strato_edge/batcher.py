"""Dynamic batching: requests for one (model, version) are joined on axis 0, run once, split back.

Each request is validated against the model's signature before it joins a batch, so one bad
request never fails its neighbours; if a joined batch still fails, its requests are retried one
by one. Inference runs in a thread pool; only an engine measured faster per row than a thread
hand-off (`inline_below_us`, 150 µs by default: an MLP, a small CNN) runs on the event loop, where
the hand-off would cost more than the model. Such an engine runs each request as it comes, so
it rarely batches: batching pays off for the models that run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import InvalidInput, ModelUnavailable
from strato.serving import validate_inputs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Executor

    from strato.engines import Engine

    from strato_edge.config import BatchingConfig

__all__ = ["Batcher"]

log = logging.getLogger("strato.edge.batcher")

Tensors = dict[str, np.ndarray[Any, Any]]
_WARM_RUNS = 8  # runs measured in the thread pool before a model may run inline


@dataclass(slots=True)
class _Pending:
    inputs: Tensors
    rows: int
    key: tuple[tuple[str, str, tuple[int, ...]], ...]
    future: asyncio.Future[Tensors]
    enqueued: float = 0.0  # perf_counter() when it joined the queue (queue-time statistics)


def _rows(array: np.ndarray[Any, Any]) -> int:
    """Rows of a request on axis 0; a 0-d tensor counts as one (the engine refuses it)."""
    return int(array.shape[0]) if array.ndim else 1


def _batch_axis_dynamic(engine: Engine) -> bool:
    specs = [*engine.inputs.values(), *engine.outputs.values()]
    return bool(specs) and all(spec.shape and spec.shape[0] == -1 for spec in specs)


class Batcher:
    """Batches requests for ONE engine; a batch never mixes models or versions."""

    def __init__(
        self,
        engine: Engine,
        config: BatchingConfig,
        executor: Executor,
        *,
        on_batch: Callable[[int], None] | None = None,
        on_run: Callable[[int, float, Sequence[float]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.batching = config.enabled and _batch_axis_dynamic(engine)
        self._executor = executor
        self._on_batch = on_batch
        self._on_run = on_run  # (rows, compute seconds, each request's queue wait)
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.instances)
        self._running = 0
        self._closed = False
        self._collector: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._row_seconds = 0.0
        self._runs = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def infer(self, inputs: Tensors) -> Tensors:
        if not self.batching or self._closed:
            return await self._run_engine(inputs)
        if not self._queue and self._running == 0 and not self._slots.locked():
            return await self._run_alone(inputs)  # the engine validates a lone request itself
        validate_inputs(self.engine.inputs, inputs)
        pending = self._pending(inputs)
        self._queue.append(pending)
        self._wakeup.set()
        if self._collector is None:
            self._collector = asyncio.get_running_loop().create_task(self._collect())
        return await pending.future

    def _pending(self, inputs: Tensors) -> _Pending:
        rows = {_rows(array) for array in inputs.values()}
        if len(rows) != 1:
            raise InvalidInput(f"inputs disagree on the batch size (axis 0): {sorted(rows)}")
        key = tuple(sorted((name, a.dtype.str, tuple(a.shape[1:])) for name, a in inputs.items()))
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        return _Pending(inputs, rows.pop(), key, future, time.perf_counter())

    async def _run_alone(self, inputs: Tensors) -> Tensors:
        """An idle model runs a lone request at once; requests arriving meanwhile queue up."""
        await self._slots.acquire()  # free: checked just before, and nothing awaited since
        self._running += 1
        try:
            return await self._run_engine(inputs)
        finally:
            self._running -= 1
            self._slots.release()

    def _timed_infer(self, inputs: Tensors, rows: int) -> tuple[Tensors, float]:
        started = time.perf_counter()
        outputs = self.engine.infer(inputs)
        seconds = time.perf_counter() - started
        per_row = seconds / max(rows, 1)
        # Falls at once, rises slowly: a neighbour stealing the CPU only ever adds time, so
        # the estimate tracks the model's own cost instead of flapping on noise.
        if self._runs == 0 or per_row < self._row_seconds:
            self._row_seconds = per_row
        else:
            self._row_seconds += 0.05 * (per_row - self._row_seconds)
        self._runs += 1
        return outputs, seconds

    def inline(self, rows: int) -> bool:
        """Runs of an engine measured faster per row than a thread hand-off stay on the event
        loop, unless the run is big enough to stall it (over 10x the limit)."""
        limit = self.config.inline_below_us / 1e6
        return (
            self._runs >= _WARM_RUNS
            and self._row_seconds < limit
            and self._row_seconds * rows < 10 * limit
        )

    async def _run_engine(self, inputs: Tensors, waits: Sequence[float] = (0.0,)) -> Tensors:
        rows = _rows(next(iter(inputs.values()))) if inputs else 0
        if self.inline(rows):
            outputs, seconds = self._timed_infer(inputs, rows)
        else:
            loop = asyncio.get_running_loop()
            outputs, seconds = await loop.run_in_executor(
                self._executor, self._timed_infer, inputs, rows
            )
        if self._on_batch is not None:
            self._on_batch(rows)
        if self._on_run is not None:
            self._on_run(rows, seconds, waits)
        return outputs

    async def _collect(self) -> None:
        while True:
            await self._slots.acquire()
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._running += (
                1  # counts from the first pop, so `retire` never drops a gathered batch
            )
            batch = await self._gather()
            if not batch:
                self._running -= 1
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pop_live(self) -> _Pending | None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():  # a request past its deadline is dropped
                return item
        return None

    async def _gather(self) -> list[_Pending]:
        first = self._pop_live()
        if first is None:
            return []
        batch, rows = [first], first.rows
        loop = asyncio.get_running_loop()
        # Wait for company only while the engine is busy anyway: a lone client never pays it.
        wait = self._running > 1 and self.config.max_queue_delay_us > 0
        deadline = loop.time() + self.config.max_queue_delay_us / 1e6
        while rows < self.config.max_batch_size:
            if self._queue:
                head = self._queue[0]
                if head.future.done():
                    self._queue.popleft()
                    continue
                if head.key != first.key or rows + head.rows > self.config.max_batch_size:
                    break
                batch.append(self._queue.popleft())
                rows += head.rows
                continue
            remaining = deadline - loop.time()
            if not wait or remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:  # not the builtin on Python 3.10
                break
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            now = time.perf_counter()
            waits = [now - pending.enqueued for pending in batch]
            if len(batch) == 1:
                await self._settle(batch[0], waits)
                return
            names = list(batch[0].inputs)
            merged = {n: np.concatenate([p.inputs[n] for p in batch]) for n in names}
            try:
                outputs = await self._run_engine(merged, waits)
            except Exception:
                log.warning("a batch of %d failed; retrying its requests one by one", len(batch))
                for pending in batch:
                    await self._settle(pending, ())
                return
            start = 0
            for pending in batch:
                stop = start + pending.rows
                if not pending.future.done():
                    pending.future.set_result({k: v[start:stop] for k, v in outputs.items()})
                start = stop
        finally:
            self._running -= 1
            self._slots.release()

    async def _settle(self, pending: _Pending, waits: Sequence[float]) -> None:
        try:
            outputs = await self._run_engine(pending.inputs, waits)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(outputs)

    async def retire(self, grace_s: float = 60.0) -> None:
        """Stop taking requests into batches; finish what is queued or running, then stop."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while (self._queue or self._running) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._collector, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(
                    ModelUnavailable("the model was unloaded while the request waited")
                )
        self._queue.clear()
