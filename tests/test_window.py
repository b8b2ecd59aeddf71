"""The window network: an output sees only the last ``history_h`` hours of input."""

import numpy as np
import pytest
from network_data import small_network_data

from pkpd_lib.nets import networks as nw

small = pytest.fixture(scope="module", name="small")(small_network_data)


def test_an_output_sees_only_its_window(small):
    x, y, *_ = small
    config = nw.NetworkConfig(units=(8, 8), block=4, kind="window", history_h=12)
    model = nw.build_network(config, y.shape[1], nw.scaling_stats(x, y))
    for layer in model.layers:  # non-zero weights everywhere, so every path carries
        layer.set_weights([w + 0.1 for w in layer.get_weights()])
    base = nw.predict_pd(model, x)[:2]
    bumped = {k: v.copy() for k, v in x.items()}
    bumped["conc"][:2, 20] *= 3.0
    moved = np.abs(nw.predict_pd(model, bumped)[:2] - base).max(axis=0) > 0
    # 49 hours in blocks of 4 are padded by 3 at the start: hour 20 is in the block of
    # hours 17-20, and a window of 12 h (3 blocks) reaches the blocks 17-20, 21-24 and
    # 25-28; nothing before or after
    assert np.flatnonzero(moved).tolist() == list(range(17, 29))


def test_window_configs_are_checked_and_other_keys_keep_their_form():
    assert nw.NetworkConfig(kind="window", history_h=24, units=(16, 16)).label == (
        "window24h-16-16"
    )
    with pytest.raises(ValueError, match="multiple of block=4"):
        nw.NetworkConfig(kind="window", history_h=10)
    with pytest.raises(ValueError, match="for kind=.window. or .reset. only"):
        nw.NetworkConfig(history_h=24)
    lstm = nw.config_to_json(nw.NetworkConfig(units=(16, 16)))
    assert "history_h" not in lstm and "latent" not in lstm
    assert "history_h" not in nw.config_to_json(nw.NetworkConfig(kind="node", block=1))
    assert "history_h" not in repr(nw.NetworkConfig())


@pytest.mark.parametrize("kind", ["window", "reset"])
def test_a_window_or_reset_network_trains_and_is_stored(kind, small, tmp_path, monkeypatch):
    monkeypatch.setenv("PKPD_MODEL_CACHE", str(tmp_path))
    monkeypatch.delenv("PKPD_CACHE_MISS", raising=False)
    config = nw.NetworkConfig(units=(4,), kind=kind, history_h=8, max_epochs=3)
    run = nw.train_or_load(config, *small, seed=0, report_every=None)
    again = nw.train_or_load(config, *small, seed=0, report_every=None)
    assert len(list(tmp_path.glob(f"{kind}8h-4_seed0_*.keras"))) == 1
    *_, val_x, _ = small
    np.testing.assert_array_equal(
        nw.predict_pd(run.model, val_x), nw.predict_pd(again.model, val_x)
    )
