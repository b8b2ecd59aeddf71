"""The in-process memo (pkpd_lib.memo): results kept by the content of their inputs, the
least recently used dropped first. Its users are tested with them (test_datasets,
test_classical_variants)."""

import numpy as np
import pytest

from pkpd_lib import memo


def test_the_least_recently_used_result_is_dropped_first():
    m = memo.Memo(kept=2)
    m.put("a", 1), m.put("b", 2)
    assert m.get("a") == 1  # a is now the most recent
    m.put("c", 3)
    assert (m.get("a"), m.get("b"), m.get("c"), len(m)) == (1, None, 3, 2)
    with pytest.raises(ValueError, match="at least one"):
        memo.Memo(kept=0)
    with pytest.raises(ValueError, match="None"):
        m.put("d", None)


def test_keys_follow_content_not_identity():
    a = np.arange(4.0)
    assert memo.content_key(a, "QD") == memo.content_key(a.copy(), "QD")
    assert memo.content_key(a, "QD") != memo.content_key(a, "BID")
    assert memo.content_key(a) != memo.content_key(a.astype(np.float32))  # dtype counts
    assert memo.content_key(a) != memo.content_key(a.reshape(2, 2))  # shape counts
    b = a.copy()
    b[3] = np.nextafter(b[3], 5.0)  # one bit
    assert memo.content_key(a) != memo.content_key(b)
