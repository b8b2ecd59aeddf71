"""One network for several biomarkers: targets (N, T, K), a head per biomarker scaled as
its own fractional change, one loss per biomarker scaled by its variance; the one-biomarker
path unchanged."""

import numpy as np
import pytest

from pkpd_lib.nets import networks as nw
from pkpd_lib.pmx import model
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.study import datasets

CONFIG = nw.NetworkConfig(
    units=(8,), block=4, batch_size=16, learning_rate=1e-2, max_epochs=4, patience=3
)


@pytest.fixture(scope="module")
def two():
    times = np.arange(0.0, 48.0)

    def data(n, seed):
        pop = sample_population(n, seed=seed)
        return datasets.simulate_dataset(pop, reg.qd(), times, seed, model.simulate_feedback)

    train, val = data(48, 1), data(16, 2)

    def y(d):
        return np.stack([d.biomarkers_obs["R"], d.biomarkers_obs["M"]], axis=-1)

    return datasets.network_inputs(train), y(train), datasets.network_inputs(val), y(val)


def test_each_biomarker_is_its_baseline_times_one_plus_its_own_fractional_change(two):
    """With the readout zeroed, each output is its training mean fractional change from
    the patient's baseline: the head scales each biomarker on its own."""
    x, y, vx, _ = two
    stats = nw.scaling_stats(x, y)
    frac = y / x["BASE_PD"][:, None, None] - 1
    np.testing.assert_allclose(stats["frac_offset"], np.nanmean(frac, axis=(0, 1)))
    net = nw.build_network(CONFIG, 48, stats)
    readout = net.get_layer("readout")
    readout.set_weights([np.zeros_like(w) for w in readout.get_weights()])
    pred = nw.predict_pd(net, vx)
    assert pred.shape == (16, 48, 2)
    expected = vx["BASE_PD"][:, None, None] * (1 + stats["frac_offset"])
    np.testing.assert_allclose(pred, np.broadcast_to(expected, pred.shape), rtol=1e-5)


def test_the_loss_weighs_each_biomarker_by_one_over_its_variance(two):
    x, y, vx, vy = two
    run = nw.train_network(CONFIG, x, y, vx, vy, seed=0, report_every=None)
    pred = nw.predict_pd(run.model, vx)
    var = np.nanvar(y, axis=(0, 1))
    err = (pred - vy) ** 2 / var * var.mean()
    assert run.history["val_loss"][run.best_epoch - 1] == pytest.approx(err.mean(), rel=1e-3)


def test_a_biomarker_that_dominates_in_units_does_not_dominate_the_loss(two):
    x, y, vx, vy = two
    loss = nw.biomarker_mse(nw.biomarker_weights(y))
    pred = y.copy()
    pred[..., 0] += np.nanstd(y[..., 0])  # one SD off on R
    off_r = float(np.mean(loss(y, pred)))
    pred = y.copy()
    pred[..., 1] += np.nanstd(y[..., 1])  # one SD off on M
    assert float(np.mean(loss(y, pred))) == pytest.approx(off_r, rel=1e-5)


def test_the_single_biomarker_network_is_unchanged(two):
    x, y, vx, vy = two
    one = nw.build_network(CONFIG, 48, nw.scaling_stats(x, y[..., 0]))
    both = nw.build_network(CONFIG, 48, nw.scaling_stats(x, y))
    assert one.output_shape == (None, 48) and both.output_shape == (None, 48, 2)
    assert one.get_layer("readout").units == 4 and both.get_layer("readout").units == 8


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda y: y[..., :1], r"give one biomarker as \(patients, times\)"),
        (lambda y: y[None], r"must be \(patients, times\) or \(patients, times, biomarkers\)"),
        (lambda y: y[:, :40], r"train_y has shape \(48, 40, 2\) .* but train_x\['conc'\]"),
    ],
)
def test_targets_of_the_wrong_shape_are_refused(two, edit, message):
    x, y, vx, vy = two
    with pytest.raises(ValueError, match=message):
        nw.train_network(CONFIG, x, edit(y), vx, vy, report_every=None)


def test_training_and_validation_must_hold_the_same_biomarkers(two):
    x, y, vx, vy = two
    with pytest.raises(ValueError, match="must hold the same biomarkers"):
        nw.train_network(CONFIG, x, y, vx, vy[..., 0], report_every=None)


def test_a_turnover_ude_refuses_two_biomarkers(two):
    x, y, _, _ = two
    config = nw.NetworkConfig(units=(4,), block=1, kind="ude")
    with pytest.raises(ValueError, match="predicts one biomarker .* the targets hold 2"):
        nw.build_network(config, 48, nw.scaling_stats(x, y))


def test_the_two_biomarker_loss_keeps_the_units_early_stopping_is_set_in(two):
    """min_delta is in squared biomarker units: a loss over each variance alone would make
    it a large fraction of the loss and stop training early (it did: epoch 18 of every
    seed of chapter 21's first two-output networks)."""
    _, y, _, _ = two
    w = nw.biomarker_weights(y)
    same = np.stack([y[..., 0], y[..., 0]], axis=-1)
    np.testing.assert_allclose(nw.biomarker_weights(same), [1.0, 1.0])
    pred = same + 2.0
    assert float(np.mean(nw.biomarker_mse(nw.biomarker_weights(same))(same, pred))) == (
        pytest.approx(4.0)
    )
    var = np.nanvar(y, axis=(0, 1))
    assert float(np.sum(w * var)) == pytest.approx(float(np.sum(var)))


def test_the_biomarker_loss_is_part_of_the_store_key(two, monkeypatch):
    """A network of several biomarkers trained with another loss is never found; a
    one-biomarker key does not depend on it."""
    x, y, vx, vy = two
    several = nw._fingerprint(CONFIG, 0, (x, y, vx, vy))[0]
    one = nw._fingerprint(CONFIG, 0, (x, y[..., 0], vx, vy[..., 0]))[0]
    monkeypatch.setattr(nw, "BIOMARKER_LOSS", "another loss")
    assert nw._fingerprint(CONFIG, 0, (x, y, vx, vy))[0] != several
    assert nw._fingerprint(CONFIG, 0, (x, y[..., 0], vx, vy[..., 0]))[0] == one
