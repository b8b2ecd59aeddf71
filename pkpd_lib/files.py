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
import json
import os
import shutil
import sys
import tempfile
import time
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
    with atomic_paths([path], overwrite) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths, overwrite: bool = False) -> Iterator[list[Path]]:
    """Like :func:`atomic_path` for several files that belong together (a model and its
    metrics): yield one temporary path per target; on success all are placed, in the
    order given, or none is (:func:`place_together`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_paths([folder / "a.txt", folder / "b.txt"]) as (a, b):
    ...     _ = a.write_text("A"), b.write_text("B")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'b.txt']
    """
    targets = [refuse_overwrite(path, overwrite) for path in paths]
    tmps = []
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
            )
            os.close(fd)
            tmps.append(Path(tmp))
            tmps[-1].unlink()  # writers such as Keras refuse or append to an existing file
        yield tmps
        for tmp, path in zip(tmps, targets, strict=True):
            if not tmp.is_file():
                raise RuntimeError(f"nothing was written for {path}")
        place_together(list(zip(tmps, targets, strict=True)), overwrite)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _place(tmp: Path, path: Path, overwrite: bool) -> Path | None:
    """Rename ``tmp`` to ``path``; return a backup (hard link, else copy) of the file it
    replaced, None if none. Without ``overwrite`` an existing ``path`` is never replaced,
    even one that another process creates at this moment (a hard link fails if the name
    exists)."""
    if not overwrite:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} appeared while it was being written") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(path):
                raise FileExistsError(f"{path} appeared while it was being written") from None
            os.replace(tmp, path)
        else:
            tmp.unlink()
        return None
    backup = None
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        backup = path.with_name(f"{tmp.name}.old")
        try:
            os.link(path, backup, follow_symlinks=False)
        except OSError:  # a file system without hard links: a copy
            shutil.copy2(path, backup, follow_symlinks=False)
    try:
        os.replace(tmp, path)
    except BaseException:
        if backup is not None:
            backup.unlink()
        raise
    return backup


def place_together(moves: list[tuple[Path, Path]], overwrite: bool = False) -> None:
    """Rename each complete temporary file to its target, in order, all or nothing: if
    one rename fails (the target appeared, became a folder, the disk is gone), the ones
    already done are undone (the new file removed, a replaced file put back) and the
    error is raised.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "new_a").write_text("A"), (folder / "new_b").write_text("B")
    >>> (folder / "b").mkdir()  # the second target cannot be placed
    >>> place_together([(folder / "new_a", folder / "a"), (folder / "new_b", folder / "b")])
    Traceback (most recent call last):
    ...
    FileExistsError: ... appeared while it was being written
    >>> (folder / "a").exists()
    False
    """
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, path in moves:
            done.append((path, _place(tmp, path, overwrite)))
    except BaseException:
        for path, backup in reversed(done):
            if backup is not None:
                os.replace(backup, path)
            else:
                path.unlink(missing_ok=True)
        raise
    for _path, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


#: Seconds :func:`exclusive_lock` waits for a lock before it gives up (training a network
#: that another process holds the lock for takes minutes, not hours).
LOCK_TIMEOUT_S = 3600.0

#: Seconds of waiting after which :func:`exclusive_lock` says what it waits for.
LOCK_NOTICE_S = 5.0


@contextlib.contextmanager
def exclusive_lock(
    path: str | Path, timeout_s: float | None = None, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while in the block.

    Two processes that need the same cached model (notebooks run side by side) then
    train it once: the second waits and loads what the first saved. The operating
    system releases the lock if the holder dies. A waiting process prints one line
    (``waiting for ... held by another process``) after :data:`LOCK_NOTICE_S` seconds
    and raises ``TimeoutError`` after ``timeout_s`` seconds (default
    :data:`LOCK_TIMEOUT_S`), checking every ``poll_s`` seconds.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / "m.lock"
    >>> with exclusive_lock(lock):
    ...     with exclusive_lock(lock, timeout_s=0.3):  # another open file: not re-entrant
    ...         pass
    Traceback (most recent call last):
    ...
    TimeoutError: gave up waiting for ....lock after 0.3 s: another process holds it ...
    """
    path = Path(path)
    timeout_s = LOCK_TIMEOUT_S if timeout_s is None else float(timeout_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            _acquire(handle, path, timeout_s, poll_s)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, path: Path, timeout_s: float, poll_s: float) -> None:
    """Take the lock on the open ``handle``, polling; see :func:`exclusive_lock`."""
    t0, told = time.monotonic(), False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - t0
        if waited >= timeout_s:
            raise TimeoutError(
                f"gave up waiting for {path} after {timeout_s:g} s: another process holds "
                "it (a training run that hangs?); end that process, or delete the lock "
                "file if no process uses it"
            )
        if not told and waited >= min(LOCK_NOTICE_S, timeout_s):
            print(f"waiting for {path} held by another process", file=sys.stderr, flush=True)
            told = True
        time.sleep(min(poll_s, max(timeout_s - waited, 0.0)))


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


class DamagedFileError(ValueError):
    """A file exists but cannot be read: truncated (an interrupted copy, a full disk) or
    otherwise damaged. The message names the file."""


def default_cache_dir() -> Path:
    """Folder of stored results: ``$PKPD_MODEL_CACHE`` if set, else the user's
    cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) under ``pkpd_lib/models``. An
    empty ``$PKPD_MODEL_CACHE`` is an error (``ValueError``), not the user's cache.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {CACHE_ENV: "/tmp/models"}):
    ...     default_cache_dir()
    PosixPath('/tmp/models')
    >>> with mock.patch.dict(os.environ, {CACHE_ENV: ""}):
    ...     default_cache_dir()
    Traceback (most recent call last):
    ...
    ValueError: $PKPD_MODEL_CACHE is set but empty: set it to a folder, or unset it ...
    """
    if CACHE_ENV in os.environ:
        value = os.environ[CACHE_ENV]
        if not value.strip():
            raise ValueError(
                f"${CACHE_ENV} is set but empty: set it to a folder, or unset it to use "
                "the user's cache folder"
            )
        return Path(value)
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


#: Relative tolerance of :func:`signatures_match`, as a fraction of an array's RMS.
#: Another CPU's numpy (other vector code for exp, log, power) moves simulated data by
#: about 1e-14 of their scale and the ODE solver's near-zero concentrations by about
#: 1e-12 mg/L; the empirical Bayes PK profiles (fitted to 1e-12) by 3e-10 of their RMS.
#: All that stays inside this, while data from another seed, dose or sampling design
#: differ by the order of the data themselves, and a fit stopped at scipy's default
#: tolerances (1e-8) moved those profiles' statistics by 7e-5: outside.
SIGNATURE_RTOL = 1e-5

#: Random projections per array in a :func:`data_signature`.
SIGNATURE_PROJECTIONS = 8


def _flatten(obj: object, name: str = "") -> dict[str, object]:
    """Numeric arrays (float64) and other leaves (their repr) of nested mappings and
    sequences, by path."""
    if isinstance(obj, Mapping):
        out = {}
        for k in sorted(obj, key=str):
            out.update(_flatten(obj[k], f"{name}/{k}"))
        return out
    if isinstance(obj, np.ndarray | list | tuple | float | int | np.number) and not isinstance(
        obj, bool
    ):
        try:
            a = np.asarray(obj)
        except ValueError:  # ragged
            a = np.asarray(obj, dtype=object)
        if a.dtype.kind in "biuf":
            return {name: np.asarray(a, dtype="float64")}
        if a.dtype.kind == "O" and not isinstance(obj, np.ndarray):
            out = {}
            for i, item in enumerate(obj):
                out.update(_flatten(item, f"{name}[{i}]"))
            return out
        return {name: repr(a.tolist())}
    return {name: repr(obj)}


def data_signature(obj: object) -> dict[str, object]:
    """A summary of the data in ``obj`` (arrays in nested mappings and sequences) that
    identifies them up to :data:`SIGNATURE_RTOL`: for each numeric array its shape, the
    count of NaNs, and the mean, RMS, minimum, maximum and :data:`SIGNATURE_PROJECTIONS`
    fixed random projections of its finite values; anything else by its ``repr``.
    Compare two with :func:`signatures_match`; it is stored as JSON beside a result.

    Examples
    --------
    >>> a = data_signature({"conc": np.linspace(0.0, 5.0, 100)})
    >>> b = data_signature({"conc": np.linspace(0.0, 5.0, 100) * (1 + 1e-12)})
    >>> signatures_match(a, b), signatures_match(a, data_signature({"conc": np.ones(100)}))
    (True, False)
    """
    out: dict[str, object] = {}
    for name, a in _flatten(obj).items():
        if isinstance(a, str):
            out[name] = a
            continue
        flat = a.ravel()
        finite = np.isfinite(flat)
        values = np.where(finite, flat, 0.0)
        n = max(flat.size, 1)
        signs = np.random.default_rng(flat.size).integers(0, 2, (SIGNATURE_PROJECTIONS, flat.size))
        stats = [
            float(values.mean()) if flat.size else 0.0,
            float(np.sqrt((values**2).mean())) if flat.size else 0.0,
            float(values.min()) if flat.size else 0.0,
            float(values.max()) if flat.size else 0.0,
            *((2.0 * signs - 1.0) @ values / np.sqrt(n)).tolist(),
        ]
        out[name] = {"shape": list(a.shape), "nonfinite": int((~finite).sum()), "stats": stats}
    return out


def signatures_match(a: Mapping, b: Mapping, rtol: float = SIGNATURE_RTOL) -> bool:
    """Whether two :func:`data_signature` results describe the same data: the same
    arrays, shapes and non-finite counts, every statistic within ``rtol`` times the
    array's RMS, everything else equal."""
    if set(a) != set(b):
        return False
    for name, x in a.items():
        y = b[name]
        if isinstance(x, str) or isinstance(y, str):
            if x != y:
                return False
            continue
        if x["shape"] != y["shape"] or x["nonfinite"] != y["nonfinite"]:
            return False
        sx, sy = np.asarray(x["stats"]), np.asarray(y["stats"])
        scale = max(abs(sx[1]), abs(sy[1]), 1e-300)
        if sx.shape != sy.shape or np.any(np.abs(sx - sy) > rtol * scale):
            return False
    return True


def signature_structure(signature: Mapping) -> str:
    """What must agree exactly for two signatures to match (names, shapes, reprs): part
    of a stored result's file name, so a lookup reads only candidates that can match."""
    parts = [f"{k}:{v if isinstance(v, str) else v['shape']}" for k, v in sorted(signature.items())]
    return ";".join(parts)


def find_stored(folder: Path, prefix: str, signature: Mapping) -> Path | None:
    """The ``.json`` record in ``folder`` named ``prefix_*.json`` whose ``"signature"``
    matches ``signature`` (:func:`signatures_match`), or None."""
    for record in sorted(Path(folder).glob(f"{prefix}_*.json")):
        try:
            stored = json.loads(record.read_text()).get("signature")
        except (ValueError, OSError, AttributeError):
            continue  # a damaged record: the caller finds the file by its own name
        if stored is not None and signatures_match(stored, signature):
            return record
    return None


#: Environment variable naming a file to which every stored result that is read or
#: written is noted (one file name per line); ``tasks.py execute`` uses it to remove
#: stored results no chapter uses any more.
USE_LOG_ENV = "PKPD_STORE_LOG"


def note_use(*paths: Path) -> None:
    """Note ``paths`` (their folder and name) in the file ``$PKPD_STORE_LOG``, if set.

    Examples
    --------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> log = Path(tempfile.mkdtemp()) / "used.txt"
    >>> with mock.patch.dict(os.environ, {USE_LOG_ENV: str(log)}):
    ...     note_use(Path("store/a.json"))
    >>> log.read_text().splitlines()
    ['store/a.json']
    """
    log = os.environ.get(USE_LOG_ENV)
    if log:
        with open(log, "a") as handle:  # appends of one short line do not interleave
            handle.write("".join(f"{Path(p)}\n" for p in paths))


def locate_stored(
    cache_dir: str | Path, prefix: str, signature: Mapping, subfolder: str = ""
) -> tuple[Path, bool]:
    """Where the result ``prefix`` computed from data with ``signature`` is stored: its
    ``.json`` record (the stored one that matches, else the name a new one gets), noted
    with :func:`note_use`, and whether a miss must raise (:func:`miss_is_error`, for the
    default store only). ``cache_dir``: a folder, or ``"default"`` for
    :func:`default_cache_dir` (its ``subfolder``)."""
    strict = cache_dir == "default" and miss_is_error()
    folder = default_cache_dir() / subfolder if cache_dir == "default" else Path(cache_dir)
    record = find_stored(folder, prefix, signature)
    record = record or folder / f"{prefix}_{signature_name(signature)}.json"
    note_use(record)
    return record, strict


def signature_name(signature: Mapping) -> str:
    """A short name for one signature (8 hex digits), to tell stored results apart."""
    text = json.dumps(signature, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# --- the retrain tier, in shards ---------------------------------------------------------

#: Environment variable: ``"k/n"`` (1 <= k <= n) makes this process shard ``k`` of ``n``
#: of the retrain tier (:func:`retrain_shard`). The default store is then the committed
#: one, read as in the test command; each stored result that :func:`shard_plan` gives to
#: shard ``k`` is computed again from the same inputs, compared with the stored one
#: (:func:`report_retrained`), and the stored one is what the caller gets, so that every
#: result downstream of it has the key it was stored under.
SHARD_ENV = "PKPD_RETRAIN_SHARD"

#: Environment variable naming the folder where a shard writes the results it computed
#: again, and its report (:data:`REPORT_NAME`), one JSON object per line.
RETRAIN_DIR_ENV = "PKPD_RETRAIN_DIR"

#: The report file a shard writes in ``$PKPD_RETRAIN_DIR``.
REPORT_NAME = "retrained.jsonl"


def retrain_shard() -> tuple[int, int] | None:
    """This process's shard of the retrain tier, ``(k, n)`` from ``$PKPD_RETRAIN_SHARD``
    (``"k/n"``), or None outside the retrain tier's shards.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {SHARD_ENV: "3/10"}):
    ...     retrain_shard()
    (3, 10)
    >>> with mock.patch.dict(os.environ, {SHARD_ENV: "11/10"}):
    ...     retrain_shard()
    Traceback (most recent call last):
    ...
    ValueError: $PKPD_RETRAIN_SHARD must be 'k/n' with 1 <= k <= n, got '11/10'
    """
    value = os.environ.get(SHARD_ENV, "").strip()
    if not value:
        return None
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        k, n = 0, 0
    if not 1 <= k <= n:
        raise ValueError(f"${SHARD_ENV} must be 'k/n' with 1 <= k <= n, got {value!r}")
    return k, n


def stored_records(store: str | Path) -> dict[str, float]:
    """Every result in the store: its record (``.json``, relative to ``store``, with
    ``/``) and the seconds it took to compute (recorded when it was computed)."""
    store = Path(store)
    records = {}
    for record in sorted([*store.glob("*.json"), *store.glob("fits/*.json")]):
        try:
            seconds = float(json.loads(record.read_text()).get("seconds") or 0.0)
        except (ValueError, OSError, AttributeError) as err:
            raise DamagedFileError(f"{record} is a damaged stored record ({err})") from None
        records[record.relative_to(store).as_posix()] = seconds
    return records


def shard_plan(records: Mapping[str, float], n: int) -> dict[str, int]:
    """The shard (1 to ``n``) of each stored result: longest first to the shard with the
    least work so far (by the seconds each took to compute), ties to the lower shard.
    The same store gives the same plan on every machine, and every result is in exactly
    one shard.

    Examples
    --------
    >>> shard_plan({"a.json": 30.0, "b.json": 20.0, "c.json": 15.0, "d.json": 10.0}, 2)
    {'a.json': 1, 'b.json': 2, 'c.json': 2, 'd.json': 1}
    """
    if n < 1:
        raise ValueError(f"the retrain tier needs at least one shard, got {n}")
    loads = [0.0] * n
    plan = {}
    for name, seconds in sorted(records.items(), key=lambda item: (-item[1], item[0])):
        shard = loads.index(min(loads))
        plan[name] = shard + 1
        loads[shard] += seconds
    return plan


_PLANS: dict[tuple[str, int], dict[str, int]] = {}


def retrain_here(record: Path) -> Path | None:
    """In shard ``k`` of the retrain tier (:func:`retrain_shard`), for a ``record`` of
    the default store that :func:`shard_plan` gives to shard ``k``: the path (in
    ``$PKPD_RETRAIN_DIR``) where the result computed again goes (the caller computes it
    unless it is there already: notebooks of one shard share the folder). Otherwise
    None: the stored result is used as it is."""
    shard = retrain_shard()
    if shard is None:
        return None
    store = default_cache_dir().resolve()
    try:
        name = Path(record).resolve().relative_to(store).as_posix()
    except ValueError:
        return None  # not the default store
    key = (str(store), shard[1])
    if key not in _PLANS:
        _PLANS[key] = shard_plan(stored_records(store), shard[1])
    if _PLANS[key].get(name) != shard[0]:
        return None
    folder = os.environ.get(RETRAIN_DIR_ENV, "").strip()
    if not folder:
        raise ValueError(f"${SHARD_ENV} is set, so ${RETRAIN_DIR_ENV} must name a folder")
    return Path(folder) / name


def report_retrained(record: Path, kind: str, seconds: float, caught=(), **comparison) -> None:
    """Add one line to the shard's report (:data:`REPORT_NAME` in ``$PKPD_RETRAIN_DIR``):
    the stored ``record`` (relative to the store), its ``kind``, the ``seconds`` that
    computing it again took, the warnings ``caught`` while computing it (each distinct
    one, as ``Category: message``) and the ``comparison`` with the stored result (each a
    difference, its tolerance and whether it is within, see the callers)."""
    store = default_cache_dir().resolve()
    line = {
        "record": Path(record).resolve().relative_to(store).as_posix(),
        "kind": kind,
        "seconds": round(float(seconds), 1),
        **comparison,
        "warnings": sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught}),
    }
    report = Path(os.environ[RETRAIN_DIR_ENV]) / REPORT_NAME
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "a") as handle:  # one short line per append: no interleaving
        handle.write(json.dumps(line) + "\n")
