"""Results computed once per process and looked up by the content of their inputs.

A chapter fits several PD structures to one training set, and protocol scoring simulates
the same patients under the same regimen for every method and replicate: the PK fit and
the ODE integration are deterministic, so the second call can return the first result.
:class:`Memo` keeps the most recently used results (a bounded number, the least recently
used dropped first), keyed by :func:`content_key` of the inputs, never by their identity.
What it returns is shared: callers hand out read-only arrays (:func:`read_only`) or copies.

Examples
--------
>>> import numpy as np
>>> memo = Memo(kept=2)
>>> calls = []
>>> def slow_square(x):
...     key = content_key(x)
...     hit = memo.get(key)
...     if hit is None:
...         calls.append(1)
...         hit = memo.put(key, read_only(x**2))
...     return hit
>>> slow_square(np.arange(3.0)), slow_square(np.arange(3.0)), len(calls)
(array([0., 1., 4.]), array([0., 1., 4.]), 1)
>>> slow_square(np.arange(3.0)).flags.writeable
False
"""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict

import numpy as np


def content_key(*parts: object) -> str:
    """A digest of ``parts``: numpy arrays by dtype, shape and bytes, anything else by its
    pickle (so it must pickle the same way whenever its content is the same: numbers,
    strings, tuples, frozen dataclasses of those).

    Parameters
    ----------
    *parts : object
        The inputs that determine a result, in a fixed order.

    Returns
    -------
    str
        A SHA-256 hex digest.

    Examples
    --------
    >>> import numpy as np
    >>> content_key(np.zeros(3), "QD") == content_key(np.zeros(3), "QD")
    True
    >>> content_key(np.zeros(3)) == content_key(np.zeros((3, 1)))  # shape counts
    False
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            digest.update(b"a" + part.dtype.str.encode() + repr(part.shape).encode())
            digest.update(part.tobytes())
        else:
            digest.update(b"p" + pickle.dumps(part, protocol=5))
    return digest.hexdigest()


def read_only(*arrays):
    """Mark numpy ``arrays`` read-only (other objects are left alone) and return the first,
    so that a result shared between callers cannot be changed by one of them.

    Parameters
    ----------
    *arrays : object
        Arrays to protect.

    Returns
    -------
    object
        ``arrays[0]``.
    """
    for array in arrays:
        if isinstance(array, np.ndarray):
            array.flags.writeable = False
    return arrays[0] if arrays else None


class Memo:
    """At most ``kept`` results of this process, by key, the least recently used dropped
    first.

    Parameters
    ----------
    kept : int
        How many results to keep (at least 1).
    """

    def __init__(self, kept: int):
        if kept < 1:
            raise ValueError(f"a memo keeps at least one result, got kept={kept}")
        self.kept = kept
        self._items: OrderedDict[str, object] = OrderedDict()

    def get(self, key: str):
        """The result stored under ``key`` (now the most recently used), or None.

        Parameters
        ----------
        key : str
            From :func:`content_key`.
        """
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, value):
        """Store ``value`` under ``key``, dropping the least recently used beyond
        :attr:`kept`; returns ``value``.

        Parameters
        ----------
        key : str
            From :func:`content_key`.
        value : object
            The result; not None.
        """
        if value is None:
            raise ValueError("a memo cannot store None (get returns None for a miss)")
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.kept:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every result."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
