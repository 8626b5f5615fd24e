"""Appends sealed bytes to recordings' files in a thread of its own, a batch at a time.

`os.write` and SHA-256 release the GIL, so while the kernel copies a tick's audio into the
page cache the core goes on with the next block. The thread needs the GIL back after each
write, which a busy core gives up only now and then, so the batches are large: with 16 MiB
a replay of 1,000 calls of 20 s took 0.9x the wall time of writing inline (6.1-6.4 s
against 6.8-7.0 s, three rounds each); with 2 MiB, no gain; with a queue item per write,
1.2x (the thread then mostly waits for the GIL, and the loop for the thread).

Bounded: besides the batch being filled, at most `max_pending` batches wait and one is
being written; beyond that the caller blocks, so a slow disk slows the loop (the kernel
ring holds what waits) instead of growing memory. What a SIGKILL can lose grows by what
has not been written yet: normally what the last turn of the loop handed over (replaying
1,000 calls, the thread had finished the previous batch at 36 of 41 hand-overs and never
had two waiting), at most those batches.

A write error fails one recording: the thread skips its later bytes and lists it in
`failures` for the owner to report (`ArchiveWriter` does, at its next event).
"""

from __future__ import annotations

import errno
import hashlib
import queue
import threading
from collections import deque
from typing import Generic, Protocol, TypeVar

from recorder.runtime.files import write_all

BATCH_BYTES = 16 << 20
MAX_PENDING = 2


class Target(Protocol):
    """A file the thread appends to. Until `wait` returns, the thread alone updates
    `sha256`, `size` and `write_error`; it reads `failed` (the owner's) to skip the bytes
    of a recording that failed."""

    fd: int
    sha256: hashlib._Hash
    size: int
    failed: bool
    write_error: OSError | None


T = TypeVar("T", bound=Target)


class Appender(Generic[T]):
    def __init__(self, *, batch_bytes: int = BATCH_BYTES, max_pending: int = MAX_PENDING) -> None:
        self._batch: list[tuple[T, bytes]] = []
        self._batch_bytes = 0
        self._limit = batch_bytes
        self._queue: queue.Queue[list[tuple[T, bytes]] | None] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self.failures: deque[T] = deque()  # appended by the thread, emptied by the owner
        self.bytes_written = 0

    def add(self, target: T, data: bytes) -> None:
        """Queue `data` after everything queued before it (the file's order is kept)."""
        self._batch.append((target, data))
        self._batch_bytes += len(data)
        if self._batch_bytes >= self._limit:
            self.submit()

    def submit(self) -> None:
        """Hand the batch to the thread; blocks while `max_pending` batches wait."""
        if not self._batch:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="appender", daemon=True)
            self._thread.start()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._queue.put(batch)

    def wait(self) -> None:
        """Until every byte added so far is written (or its recording failed)."""
        self.submit()
        self._queue.join()

    def close(self) -> None:
        self.wait()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                for target, data in batch:
                    self._append(target, data)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _append(self, target: T, data: bytes) -> None:
        if target.failed or target.write_error is not None:
            return
        try:
            write_all(target.fd, data)
        except Exception as exc:  # not only OSError: a dead thread would hang `wait`
            target.write_error = exc if isinstance(exc, OSError) else OSError(errno.EIO, str(exc))
            self.failures.append(target)
            return
        target.sha256.update(data)
        target.size += len(data)
        self.bytes_written += len(data)
