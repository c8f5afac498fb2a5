"""Optional dynamic batching per model: gather requests for up to `max_wait_ms` or
`max_batch` items, run them as one call along the batch dimension, split the outputs.

Only used when every input and output of the model has a variable leading dimension.
Requests whose non-batch dimensions differ are run in separate calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np

from edgekit.serve.pool import Result, WorkerPool


class Batcher:
    def __init__(self, pool: WorkerPool, model: str, max_batch: int, max_wait_ms: float):
        self.pool, self.model = pool, model
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000.0
        self._queue: list[tuple[dict[str, np.ndarray], asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    async def infer(self, feeds: dict[str, np.ndarray]) -> Result:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._queue.append((feeds, fut))
        if sum(_rows(f) for f, _ in self._queue) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self._queue = self._queue, []
        groups: dict[tuple, list] = {}
        for feeds, fut in queue:
            key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(feeds.items()))
            groups.setdefault(key, []).append((feeds, fut))
        for items in groups.values():
            task = asyncio.ensure_future(self._run(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list) -> None:
        sizes = [_rows(f) for f, _ in items]
        merged = {k: np.concatenate([f[k] for f, _ in items]) for k in items[0][0]}
        try:
            res = await self.pool.infer(self.model, merged)
        except Exception as exc:  # every request in the batch gets the same failure
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        start = 0
        for (_, fut), n in zip(items, sizes, strict=True):
            part = {k: v[start : start + n] for k, v in res.outputs.items()}
            start += n
            if not fut.done():
                fut.set_result(replace(res, outputs=part))


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return next(iter(feeds.values())).shape[0]
