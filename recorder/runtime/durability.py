"""Group commit: one `syncfs` a second flushes every open recording on the archive's file
system, instead of one `fdatasync` per recording (2,500 open calls would otherwise cost
2,500 syncs a second). Falls back to per-file `fdatasync` where `syncfs` is missing.

The periodic sync runs in a thread of its own (`sync_soon`): `syncfs` waits for every dirty
page of the file system, another program's too, and a capture loop held up for that long
would overflow the kernel's ring. (ctypes releases the GIL for the call.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterable
from pathlib import Path


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


class GroupSync:
    """Makes everything written under `folder` durable, with one call."""

    def __init__(self, folder: Path) -> None:
        self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._failed = False  # a background syncfs failed: the next sync runs here instead
        self.background_syncs = 0

    def sync(self, open_fds: Iterable[int]) -> None:
        """Durable now (before a rename or an audit record that says so)."""
        if _SYNCFS is not None and _SYNCFS(self._fd) == 0:
            return
        for fd in open_fds:  # no syncfs (or it failed): each open recording on its own
            os.fdatasync(fd)

    def sync_soon(self, open_fds: Iterable[int]) -> None:
        """Durable shortly: syncfs in the background thread (one at a time; a request made
        while one runs is served once it ends). Without syncfs, or after a background
        syncfs failed, the files are synced here, so that a write error reaches the caller."""
        if _SYNCFS is None:
            self.sync(open_fds)
            return
        if self._failed:  # as `sync` does when syncfs fails: each file, errors raised here
            self._failed = False
            for fd in open_fds:
                os.fdatasync(fd)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="group-sync", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        assert _SYNCFS is not None
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            if _SYNCFS(self._fd) != 0:
                self._failed = True
            self.background_syncs += 1

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self._fd)
