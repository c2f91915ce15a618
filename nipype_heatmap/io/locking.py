"""Exclusive locks between processes, held with ``flock``.

A state is locked through a small file beside it (``<state>.lock``); an output folder
through the folder itself, or, where a folder cannot be locked (NFS, where Linux emulates
``flock`` with record locks that need a file open for writing), through a file in it
(``.nipype_heatmap.lock``). A lock is released when the holder closes it or when its
process ends, however it ends: a killed run never leaves a lock behind. A lock file stays
(removing it would let a waiting process and a new one lock two different files); it holds
the holder's process id and host, for messages.

Locks are re-entrant within a process: a run that holds a folder's lock (a BIDS dataset
whose ``dataset_description.json`` it rewrites) can commit its outputs into that folder,
which takes the same lock again.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "DEFAULT_TIMEOUT",
    "FOLDER_LOCK_NAME",
    "folder_lock",
    "locked",
    "LockTimeout",
]

LOGGER = logging.getLogger(__name__)

#: Seconds a run waits for a lock before it gives up with an error (a concurrent update of
#: the same state, or another run committing into the same folder).
DEFAULT_TIMEOUT = 600.0

#: The lock file of an output folder.
FOLDER_LOCK_NAME = ".nipype_heatmap.lock"


class _Held:
    """This process's hold on one lock file: a thread lock (so that threads of one process
    exclude each other too), the locked descriptor, and how deep the owning thread is."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.fd: int | None = None
        self.depth = 0


_holds: dict[str, _Held] = {}
_registry = threading.Lock()


class LockTimeout(OSError):
    """Another run held the lock for longer than the caller would wait."""


@contextmanager
def locked(
    lock_file: str | os.PathLike[str], *, what: str, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the block.

    Parameters
    ----------
    lock_file : str or os.PathLike
        The lock file.
    what : str
        What the lock protects, for messages ("the state /data/state.nii.gz").
    timeout : float, default=600
        Seconds to wait for another holder; 0 waits not at all.

    Raises
    ------
    LockTimeout
        If another run (process or thread) holds the lock for longer than ``timeout``;
        the message names the holder recorded in the lock file.
    OSError
        If the lock file cannot be created or locked (a read-only folder).
    """
    path = os.path.abspath(os.fspath(lock_file))
    with _registry:
        hold = _holds.setdefault(path, _Held())
    deadline = time.monotonic() + timeout
    if not hold.thread_lock.acquire(timeout=max(timeout, 0)):
        raise LockTimeout(
            errno.EAGAIN,
            f"{path}: {what} is locked by another thread of this process for more than "
            f"{timeout:g} s",
        )
    try:
        if hold.depth == 0:
            hold.fd = _acquire(path, what, max(0.0, deadline - time.monotonic()))
        hold.depth += 1
    except BaseException:
        hold.thread_lock.release()
        raise
    try:
        yield
    finally:
        hold.depth -= 1
        if hold.depth == 0 and hold.fd is not None:
            os.close(hold.fd)  # releases the flock
            hold.fd = None
        hold.thread_lock.release()


def _acquire(path: str, what: str, timeout: float) -> int:
    if os.path.isdir(path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return _wait_for(fd, path, what, timeout, record=False)
        except LockTimeout:
            raise
        except OSError:  # this file system cannot lock a folder: a lock file in it
            path = os.path.join(path, FOLDER_LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise type(err)(
            err.errno, f"{path}: cannot create the lock file of {what} ({err.strerror})"
        ) from err
    return _wait_for(fd, path, what, timeout, record=True)


def _wait_for(fd: int, path: str, what: str, timeout: float, *, record: bool) -> int:
    """Take the lock on ``fd``, waiting up to ``timeout``; closes ``fd`` on failure."""
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise type(err)(err.errno, f"{path}: cannot lock {what} ({err.strerror})") from err
        if time.monotonic() >= deadline:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockTimeout(
                errno.EAGAIN,
                f"{path}: {what} is locked by another run ({holder}) for more than "
                f"{timeout:g} s; wait for it to finish, or stop it, and run again",
            )
        if not waited:
            LOGGER.info("Waiting for another run (%s) to release %s", _read_holder(fd), what)
            waited = True
        time.sleep(0.05)
    if record:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


def folder_lock(folder: str | os.PathLike[str]) -> str:
    """What locks an output folder: the folder itself (see the module doc)."""
    return os.path.abspath(os.fspath(folder))
