"""Empty files made ahead of need, so that opening a recording does not wait on the kernel.

Creating a file costs ext4 about 20 us on a quiet disk but 400-450 us while a thousand
recordings are appended to and synced every second (inode allocation; measured on this
project's machines, where a link in the same conditions costs about 50 us and opening an
existing file 4 us). In a call storm that was most of the set-up time per call, spent on
the thread that also reads the capture: 3,000 calls starting at once lost RTP live. A
thread of its own keeps up to `target` empty files ready in `<archive>/spare/`; a new
recording takes one by linking it to its own name, which fails rather than replace a file
(as `O_EXCL` would). When none is ready (a storm larger than the pool, a full disk, a
recordings folder on another file system), the caller creates its file itself.

Spares hold no descriptor and no data, and stay for the next run. At start, those a crash
left as a second name of a recording (between the link and the removal of the spare's own
name) are removed; the rest are used again. One pool holds the folder at a time (a lock):
another recorder on the same archive creates its files itself. Only names this module
makes (`<32 hex>.spare`) are ever removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import threading
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

SPARE_SUFFIX = ".spare"
TARGET = 4096  # spare files kept ready: inodes only, no data and no descriptor
_NAME = re.compile(r"\A[0-9a-f]{32}\.spare\Z")
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW


class SparePool:
    """Spare empty files in one folder, refilled by a background thread."""

    def __init__(self, folder: Path, *, target: int = TARGET) -> None:
        self._folder = folder
        self._target = target
        self._ready: deque[str] = deque()
        self._linked: deque[str] = deque()  # spares now also named as a recording
        self._wake = threading.Event()
        self._closing = False
        self._disabled = target <= 0
        self.taken = 0  # recordings that opened a spare
        self.missed = 0  # recordings that had to create their file (none ready, not usable)
        self.errors = 0  # spares that could not be made (full disk, ...)
        self._thread: threading.Thread | None = None
        self._lock: int | None = None
        if self._disabled:
            with contextlib.suppress(OSError):  # tidying only: never a reason to stop
                if folder.is_dir():
                    _clear(folder)
            return
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock = _lock(folder)
        except OSError as exc:  # (a file in its place, a read-only folder): as without
            log.warning("spare files not used: %s: %s", folder, exc.strerror or exc)
            self._disabled = True
            return
        if self._lock is None:
            log.info("spare files not used: another recorder on this archive holds them")
            self._disabled = True
            return
        self._thread = threading.Thread(target=self._run, name="spare-files", daemon=True)
        self._thread.start()

    def open(self, path: str, folder: Path) -> int | None:
        """A descriptor (write, append) of a new empty file at `path`, made from a spare;
        None when no spare is ready or it cannot be moved there (the caller creates the
        file itself, and meets any error that is not the spare's). Raises FileExistsError
        if `path` exists, as `O_EXCL` would. A spare that fails leaves nothing at `path`."""
        if self._target <= 0:
            return None
        if self._disabled or not self._ready:
            self.missed += 1
            return None
        spare = self._ready.popleft()
        self._wake.set()
        try:
            try:
                os.link(spare, path)
            except FileNotFoundError:  # the day's first recording: its folder is new
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.link(spare, path)
        except FileExistsError:
            self._ready.appendleft(spare)
            raise
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # recordings/ on a file system of its own
                log.warning("spare files not used: %s", exc.strerror)
                self._disabled = True
            self._linked.append(spare)  # (removed by the thread if it still exists)
            self.missed += 1
            return None
        # The spare's own name is removed by the refill thread: an unlink here would wait
        # for the spare folder's lock, which that thread holds through each slow create.
        self._linked.append(spare)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:  # the caller's own create says whether the fault is the spare's
            _unlink(path)  # nothing stays at the recording's name
            self.missed += 1
            return None
        self.taken += 1
        return fd

    def close(self) -> None:
        """Stop refilling. The spares still ready stay for the next run; the spare names
        of files that became recordings go now."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        while self._linked:
            _unlink(self._linked.popleft())
        if self._lock is not None:
            os.close(self._lock)  # (releases the folder to the next pool)
            self._lock = None

    def _run(self) -> None:
        try:
            usable = _take_stock(self._folder, keep=True)
        except OSError:  # (the folder removed under us): start from none
            usable = []
        self._ready.extend(usable[: self._target])
        for extra in usable[self._target :]:
            _unlink(extra)
        while not self._closing:
            while self._linked:
                _unlink(self._linked.popleft())
            while len(self._ready) < self._target and not self._closing and not self._disabled:
                path = str(self._folder / (secrets.token_hex(16) + SPARE_SUFFIX))
                try:
                    os.mknod(path, stat.S_IFREG | 0o600)  # (no descriptor, even for a moment)
                except OSError:  # full disk, no inode left: the writer creates its own
                    self.errors += 1
                    break
                self._ready.append(path)
                while self._linked:
                    _unlink(self._linked.popleft())
            self._wake.wait(1.0)  # woken by a take; a failed fill retries a second later
            self._wake.clear()


def _lock(folder: Path) -> int | None:
    """The spare folder held for this pool alone, or None: two pools using the same spare
    would make two recordings of one file."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _clear(folder: Path) -> None:
    """Spares turned off: remove those a run left, unless a running pool holds them."""
    fd = _lock(folder)
    if fd is not None:
        _take_stock(folder, keep=False)
        os.close(fd)


def _take_stock(folder: Path, *, keep: bool) -> list[str]:
    """The spares a run left that can serve again (ours, empty, one name, regular); removes
    the others: second names of recordings a crash kept, and every spare unless `keep`."""
    usable = []
    uid = os.geteuid()
    for entry in os.scandir(folder):
        if not _NAME.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        plain = stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_size == 0
        if keep and plain and info.st_uid == uid:
            usable.append(entry.path)
        else:
            _unlink(entry.path)
    return usable


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):  # gone already; leftovers go at the next start
        os.unlink(path)
