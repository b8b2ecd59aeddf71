"""The reset network: the LSTM with its state set to zero every ``history_h`` hours."""

import numpy as np
import pytest
from network_data import small_network_data

from pkpd_lib.nets import networks as nw

small = pytest.fixture(scope="module", name="small")(small_network_data)


def _moved_hours(model, x, hour):
    """The hours whose prediction moves (for the first two patients) when the
    concentration at ``hour`` is tripled."""
    base = nw.predict_pd(model, x)[:2]
    bumped = {k: v.copy() for k, v in x.items()}
    bumped["conc"][:2, hour] *= 3.0
    return np.flatnonzero(np.abs(nw.predict_pd(model, bumped)[:2] - base).max(axis=0) > 0)


def test_an_output_remembers_its_chunk_only(small):
    x, y, *_ = small
    config = nw.NetworkConfig(units=(8, 8), block=4, kind="reset", history_h=12)
    model = nw.build_network(config, y.shape[1], nw.scaling_stats(x, y))
    # 49 hours in blocks of 4 are padded by 3 at the start: the steps are hours -3-0,
    # 1-4, 5-8, ...; chunks of 12 h (3 steps) are hours -3-8, 9-20, 21-32, 33-44, 45-48.
    # Hour 10 reaches the rest of its chunk, and nothing before it or after hour 20
    assert _moved_hours(model, x, 10).tolist() == list(range(9, 21))
    # the last chunk is shorter than the others (padded at its end inside the network)
    assert _moved_hours(model, x, 46).tolist() == list(range(45, 49))


def test_a_memory_as_long_as_the_data_is_the_lstm(small):
    x, y, *_ = small
    stats = nw.scaling_stats(x, y)
    lstm = nw.build_network(nw.NetworkConfig(units=(8, 8)), y.shape[1], stats)
    whole = nw.NetworkConfig(units=(8, 8), kind="reset", history_h=52)  # 13 steps
    reset = nw.build_network(whole, y.shape[1], stats)
    for layer in lstm.layers:
        if layer.get_weights():
            reset.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_allclose(
        nw.predict_pd(reset, x), nw.predict_pd(lstm, x), rtol=1e-6, atol=1e-4
    )


def test_reset_configs_are_checked_and_keyed():
    config = nw.NetworkConfig(kind="reset", history_h=24, units=(16, 16))
    assert config.label == "reset24h-16-16"
    assert '"history_h": 24' in nw.config_to_json(config)
    assert "latent" not in nw.config_to_json(config)
    with pytest.raises(ValueError, match="reset network needs history_h"):
        nw.NetworkConfig(kind="reset", history_h=10)
    with pytest.raises(ValueError, match="reset network needs history_h"):
        nw.NetworkConfig(kind="reset")
    with pytest.raises(ValueError, match="for kind='window' or 'reset' only"):
        nw.NetworkConfig(history_h=24)
