"""Safe file writes: atomic replacement, no silent overwrite, a lock for shared caches.

A file written by this package is either the complete new file or, if the write was
interrupted (Ctrl-C, a full disk, a crash), whatever was there before: the content goes
to a temporary file in the same folder, which is renamed over the target only once it is
complete (``os.replace`` is atomic on one file system).

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_path(folder / "a.txt") as tmp:
...     _ = tmp.write_text("complete")
>>> (folder / "a.txt").read_text()
'complete'
>>> with atomic_path(folder / "a.txt") as tmp:
...     pass
Traceback (most recent call last):
...
FileExistsError: ... already exists; pass overwrite=True (--overwrite) to replace it
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the cache still works
    fcntl = None


def refuse_overwrite(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a Path; raise ``FileExistsError`` if it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write to; on success it is
    renamed to ``path`` in one step, on any exception it is deleted and ``path`` is
    untouched. An existing ``path`` is only replaced with ``overwrite=True``."""
    path = refuse_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    tmp.unlink()  # writers such as Keras refuse or append to an existing file
    try:
        yield tmp
        if not tmp.is_file():
            raise RuntimeError(f"nothing was written for {path}")
        if not overwrite and path.exists():
            raise FileExistsError(f"{path} appeared while it was being written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while in the block.

    Two processes that need the same cached model (notebooks run side by side) then
    train it once: the second waits and loads what the first saved. The operating
    system releases the lock if the holder dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
