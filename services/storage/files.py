"""How the tool names and writes its files: names that stay inside their folder, files replaced whole.

Every JSON, HTML and CSV file goes to a temporary file beside it, is flushed to disk and renamed into
place, so a full disk or a kill mid-write leaves the old file (or none), never half of one. Run and
sweep ids are names, never paths: one component of a conservative character set, checked before
anything is written. Locks come from `filelock`, which locks on Linux, macOS and Windows alike.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from filelock import FileLock, Timeout

from neuron_search.context import check_name
from neuron_search.services.errors import UserError


def inside(root: str | Path, name: str, what: str = "run id") -> Path:
    """The folder `root/name`, once `name` is checked and the resolved path is known to lie in `root`."""
    check_name(name, what)
    base = Path(root).resolve()
    folder = (base / name).resolve()
    if folder.parent != base:  # a symbolic link named like a run that points elsewhere
        raise UserError(f"{root}/{name} leads outside {root}/ (a link?): choose another {what} or results folder.")
    return Path(root) / name


@contextmanager
def atomic_open(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file to write that replaces `path` only once it is complete and on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline=newline) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step: readers see the old file or the new one."""
    with atomic_open(path) as out:
        out.write(text)


@contextmanager
def folder_lock(folder: Path, busy: str) -> Iterator[None]:
    """Hold `folder/lock` for as long as the block runs; if another process or another lock in this one
    holds it, a UserError with the message `busy`."""
    lock = FileLock(folder / "lock", timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(busy) from None
    try:
        yield
    finally:
        lock.release()
