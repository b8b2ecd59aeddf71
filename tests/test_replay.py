"""The epoch early stopping keeps, and replaying a stored run's decisions (the retrain
tier's comparison of training arithmetic across machines)."""

import numpy as np
import pytest
from network_data import small_network_data

from pkpd_lib.nets import networks as nw

small = pytest.fixture(scope="module", name="small")(small_network_data)
#: A min_delta large enough that a later, slightly lower validation loss is not kept.
CONFIG = nw.NetworkConfig(
    units=(4,), block=4, max_epochs=200, patience=8, min_delta=1.0, learning_rate=0.05
)


@pytest.fixture(scope="module")
def run(small):
    return nw.train_network(CONFIG, *small, seed=3, report_every=None)


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_the_kept_epoch_is_the_one_whose_weights_the_model_has(small, run):
    *_, val_x, val_y = small
    losses = run.history["val_loss"]
    assert run.best_epoch == nw.restored_epoch(losses, CONFIG.min_delta)
    assert run.best_epoch != int(np.argmin(losses)) + 1, "pick a case where they differ"
    pred = nw.predict_pd(run.model, val_x)
    loss = float(np.mean((pred - val_y) ** 2))
    assert loss == pytest.approx(losses[run.best_epoch - 1], rel=1e-4)
    assert loss != pytest.approx(min(losses), rel=1e-4)


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_a_replayed_run_repeats_the_weights_bit_for_bit(small, run):
    again = nw.train_network(CONFIG, *small, seed=3, report_every=None, replay=nw.Replay.of(run))
    assert again.best_epoch == run.best_epoch
    assert again.history["val_loss"] == run.history["val_loss"]
    assert again.history["lr"] == run.history["lr"]
    for a, b in zip(again.model.get_weights(), run.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_a_replay_keeps_its_epoch_whatever_the_losses_say(small, run):
    rates = nw.Replay.of(run).learning_rates[:5]
    short = nw.train_network(
        CONFIG, *small, seed=3, report_every=None, replay=nw.Replay(rates, keep_epoch=2)
    )
    assert short.epochs_run == 5 and short.best_epoch == 2
    *_, val_x, val_y = small
    loss = float(np.mean((nw.predict_pd(short.model, val_x) - val_y) ** 2))
    assert loss == pytest.approx(run.history["val_loss"][1], rel=1e-4)


def test_replays_and_kept_epochs_refuse_nonsense():
    with pytest.raises(ValueError, match="finite and > 0"):
        nw.Replay((1e-2, np.nan), keep_epoch=1)
    with pytest.raises(ValueError, match="between 1 and the 2 epochs"):
        nw.Replay((1e-2, 1e-2), keep_epoch=0)
    with pytest.raises(ValueError, match="non-empty"):
        nw.restored_epoch([], 0.1)


@pytest.mark.slow  # shares a fit or a training of over 10 s
def test_early_stopping_decisions_follow_keras(run):
    kept, ran = nw.early_stopping(run.history["val_loss"], CONFIG.min_delta, CONFIG.patience)
    assert (kept, ran) == (run.best_epoch, run.epochs_run)
    with pytest.raises(ValueError, match="NaN or inf"):
        nw.restored_epoch([1.0, np.nan], 0.1)
    with pytest.raises(ValueError, match="min_delta"):
        nw.restored_epoch([1.0], -0.1)


def test_a_replay_that_ends_before_its_kept_epoch_says_so():
    keep = nw._KeepEpoch(5)
    with pytest.raises(ValueError, match="keep epoch 5, but training ended before it"):
        keep.on_train_end()


def test_biomarker_weights_refuse_what_has_no_scale():
    y = np.random.default_rng(0).normal(size=(4, 3, 2))
    with pytest.raises(ValueError, match=r"\(N, T, K\)"):
        nw.biomarker_weights(y[..., 0])
    flat = y.copy()
    flat[..., 1] = 7.0
    with pytest.raises(ValueError, match=r"biomarker\(s\) \[1\] of train_y never vary"):
        nw.biomarker_weights(flat)
    unseen = y.copy()
    unseen[..., 0] = np.nan
    with pytest.raises(ValueError, match=r"\[0\] of train_y are never observed"):
        nw.biomarker_weights(unseen)
