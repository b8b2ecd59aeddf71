import numpy as np
import pytest

from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.pmx.sampling import SPARSE_TIMES_H
from pkpd_lib.study import datasets as ds


@pytest.fixture(scope="module")
def small():
    return ds.simulate_dataset(
        sample_population(5, seed=2), reg.bid(), np.arange(0.0, 169.0, 6.0), obs_seed=9
    )


def test_study_design_and_sparse_is_a_subset_of_dense():
    dense = ds.study_datasets("dense")
    sparse = ds.study_datasets("sparse")
    assert dense["train"].n_patients == 1000 and dense["val"].n_patients == 200
    assert sparse["test_TID"].times_h.tolist() == SPARSE_TIMES_H.tolist()
    idx = SPARSE_TIMES_H.astype(int)
    np.testing.assert_array_equal(sparse["train"].pd_obs, dense["train"].pd_obs[:, idx])
    # the same test patients under all three regimens, never among the training patients
    for r in ("BID", "TID"):
        np.testing.assert_array_equal(
            dense[f"test_{r}"].population.ids, dense["test_QD"].population.ids
        )
    assert not set(dense["train"].population.ids) & set(dense["test_QD"].population.ids)
    assert not set(dense["train"].population.ids) & set(dense["val"].population.ids)


def test_network_inputs(small):
    x = ds.network_inputs(small, baseline="observed", time_input=True)
    assert list(x) == ["conc", "time_h", *ds.STATIC_FEATURES]
    assert x["conc"].shape == x["time_h"].shape == small.conc_obs.shape
    np.testing.assert_allclose(x["BASE_PD"], small.pd_obs[:, 0], rtol=1e-6)
    x = ds.network_inputs(small)
    np.testing.assert_allclose(x["BASE_PD"], small.population.params.R0, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown baseline kind"):
        ds.network_inputs(small, baseline="median")


def test_a_screening_baseline_needs_screening_measurements(small):
    """Before: AttributeError ('NoneType' object has no attribute 'mean')."""
    from dataclasses import replace

    from pkpd_lib.nets import features

    np.testing.assert_allclose(
        features.baseline_pd(small, "screening"), small.screening_pd.mean(axis=1)
    )
    unscreened = replace(small, screening_pd=None)
    with pytest.raises(ValueError, match="data set has none"):
        features.baseline_pd(unscreened, "screening")
    with pytest.raises(ValueError, match="'screening' needs screening measurements"):
        ds.network_inputs(unscreened, baseline="screening")


def test_at_times_rejects_times_not_sampled(small):
    with pytest.raises(ValueError, match="not all among"):
        small.at_times([0.0, 1.0])


def test_every_network_input_is_in_the_feature_table(small):
    """One table (pkpd_lib.nets.features) defines the inputs the data sets build."""
    from pkpd_lib.nets import features

    x = ds.network_inputs(small, time_input=True)
    assert set(x) <= set(features.FEATURES)
    for name, values in x.items():
        assert values.ndim == (2 if features.FEATURES[name].per_step else 1)
        features.check_values(name, values)


def test_a_simulation_is_reused_only_for_the_same_patients_regimen_times_and_model():
    """Scoring simulates the same patients again for every method: the noise-free truth
    is computed once, read-only, and never reused for anything that differs."""
    from pkpd_lib.pmx import model

    pop = sample_population(4, seed=3)
    times = [0.0, 6.0, 30.0]
    first = ds.simulate_dataset(pop, reg.qd(), times, obs_seed=1)
    again = ds.simulate_dataset(pop, reg.qd(), times, obs_seed=2)
    assert again.truth is first.truth
    assert not first.truth.pd.flags.writeable and not first.truth.conc_mg_L.flags.writeable
    assert not np.array_equal(again.pd_obs, first.pd_obs)  # observations drawn afresh
    others = [
        ds.simulate_dataset(sample_population(4, seed=4), reg.qd(), times),
        ds.simulate_dataset(pop, reg.bid(), times),
        ds.simulate_dataset(pop, reg.qd(), [0.0, 6.0, 31.0]),
        ds.simulate_dataset(pop, reg.qd(), times, simulator=model.simulate_second_turnover),
    ]
    for other in others:
        assert other.truth is not first.truth
        assert not np.array_equal(other.truth.pd, first.truth.pd)
