"""Safe file writes (atomic replacement, no silent overwrite, a lock for shared caches)
and the store of computed results (trained networks, population-model fits).

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
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

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


# --- the store of computed results ------------------------------------------------------

#: Environment variable that names the folder of stored results: trained networks in it,
#: population-model fits in its ``fits/`` folder. The book's test command points it at
#: the results committed with the book (``data/trained``).
CACHE_ENV = "PKPD_MODEL_CACHE"

#: Environment variable: ``"error"`` makes a result missing from the default store an
#: error (:class:`StoreMissError`) instead of computing it. The test command sets it, so
#: that a committed network or fit that no longer matches its key is never silently
#: retrained.
MISS_ENV = "PKPD_CACHE_MISS"


class StoreMissError(LookupError):
    """A result was asked of the store, is not in it, and computing it is not allowed."""


def default_cache_dir() -> Path:
    """Folder of stored results: ``$PKPD_MODEL_CACHE`` if set, else the user's
    cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) under ``pkpd_lib/models``.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {CACHE_ENV: "/tmp/models"}):
    ...     default_cache_dir()
    PosixPath('/tmp/models')
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "pkpd_lib" / "models"


def miss_is_error() -> bool:
    """Whether a result missing from the default store must raise (``$PKPD_CACHE_MISS``
    is ``"error"``) rather than be computed.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {MISS_ENV: "error"}):
    ...     miss_is_error()
    True
    """
    value = os.environ.get(MISS_ENV, "compute")
    if value not in ("compute", "error"):
        raise ValueError(f"${MISS_ENV} must be 'compute' or 'error', got {value!r}")
    return value == "error"


#: Mantissa bits of a float64 that :func:`update_digest` keeps. Another CPU's numpy
#: (other SIMD code paths for exp, log, power) moves the last bits of simulated data;
#: keeping 20 of 52 bits (about 6 significant digits) gives such data the same key,
#: while any change a reader could see (a new seed, dose or sample time) still changes it.
DIGEST_MANTISSA_BITS = 20
_MASK = np.uint64(~((1 << (52 - DIGEST_MANTISSA_BITS)) - 1) & 0xFFFFFFFFFFFFFFFF)


def update_digest(h: hashlib._Hash, obj: object) -> None:
    """Feed ``obj`` into hash ``h``: arrays and numbers by value (float64 rounded to
    :data:`DIGEST_MANTISSA_BITS` bits), mappings by sorted key, sequences in order,
    anything else by its ``repr``.

    Examples
    --------
    >>> import hashlib
    >>> def key(x):
    ...     h = hashlib.sha256(); update_digest(h, x); return h.hexdigest()[:8]
    >>> key({"a": [1.0, 2.0]}) == key({"a": np.array([1.0, 2.0 + 1e-15])})
    True
    >>> key({"a": [1.0, 2.0]}) == key({"a": [1.0, 2.001]})
    False
    """
    if isinstance(obj, Mapping):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            update_digest(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, np.ndarray | list | tuple | float | int | np.number) and not (
        isinstance(obj, bool)
    ):
        try:
            a = np.asarray(obj)
        except ValueError:  # ragged
            a = np.asarray(obj, dtype=object)
        if a.dtype.kind not in "biuf":
            if isinstance(obj, np.ndarray) and a.dtype.kind != "O":
                h.update(repr(a.tolist()).encode())
                return
            h.update(f"seq{len(obj)}[".encode())
            for item in obj:
                update_digest(h, item)
            h.update(b"]")
            return
        a = np.ascontiguousarray(a, dtype="float64")
        h.update(f"{a.shape}".encode())
        h.update((a.view(np.uint64) & _MASK).tobytes())
    else:
        h.update(repr(obj).encode())
