"""The archive's group sync: the periodic one never holds up its caller."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder.runtime import durability
from recorder.runtime.durability import GroupSync


class SlowSyncfs:
    """Stands in for syncfs(2): takes `seconds`, answers `result`, counts its calls."""

    def __init__(self, seconds: float, result: int = 0) -> None:
        self.seconds = seconds
        self.result = result
        self.calls = 0
        self.running = threading.Event()

    def __call__(self, fd: int) -> int:
        self.running.set()
        time.sleep(self.seconds)
        self.calls += 1
        return self.result


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_periodic_sync_runs_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A syncfs that takes 0.5 s (a disk busy with another program's dirty pages) costs the
    caller nothing; requests made while it runs are served by one more sync, not queued."""
    slow = SlowSyncfs(0.5)
    monkeypatch.setattr(durability, "_SYNCFS", slow)
    group = GroupSync(tmp_path)
    started = time.monotonic()
    group.sync_soon([])
    slow.running.wait(5)
    for _ in range(10):
        group.sync_soon([])
    assert time.monotonic() - started < 0.3
    wait_for(lambda: group.background_syncs == 2)
    time.sleep(0.6)
    assert slow.calls == 2
    group.close()


def test_explicit_sync_is_synchronous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowSyncfs(0.2)
    monkeypatch.setattr(durability, "_SYNCFS", slow)
    group = GroupSync(tmp_path)
    group.sync([])
    assert slow.calls == 1  # done before `sync` returned (a rename or audit record follows)
    group.close()


def test_failed_background_sync_is_reported_by_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A syncfs that failed in the background (EIO) makes the next periodic sync go file by
    file in the caller, so that the file's own write error is raised there."""
    monkeypatch.setattr(durability, "_SYNCFS", SlowSyncfs(0, result=-1))
    synced: list[int] = []

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durability.os, "fdatasync", fdatasync)
    group = GroupSync(tmp_path)
    group.sync_soon([7])
    wait_for(lambda: group.background_syncs == 1)
    with pytest.raises(OSError, match="Input/output"):
        group.sync_soon([7])
    assert synced == [7]
    group.sync_soon([7])  # reported once; background again
    wait_for(lambda: group.background_syncs == 2)
    group.close()


def test_without_syncfs_each_file_is_synced_in_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durability, "_SYNCFS", None)
    path = tmp_path / "f"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    synced: list[int] = []
    monkeypatch.setattr(durability.os, "fdatasync", synced.append)
    group = GroupSync(tmp_path)
    group.sync_soon([fd])
    assert synced == [fd] and group.background_syncs == 0
    group.close()
    os.close(fd)


def test_close_ends_the_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durability, "_SYNCFS", SlowSyncfs(0.1))
    group = GroupSync(tmp_path)
    group.sync_soon([])
    thread = group._thread
    assert thread is not None and thread.is_alive()
    group.close()
    assert not thread.is_alive()
