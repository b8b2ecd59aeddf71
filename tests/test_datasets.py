import numpy as np
import pandas as pd
import pytest

from pkpd_lib import datasets as ds
from pkpd_lib import regimens as reg
from pkpd_lib.population import sample_population
from pkpd_lib.sampling import SPARSE_TIMES_H


@pytest.fixture(scope="module")
def small():
    return ds.simulate_dataset(
        sample_population(5, seed=2), reg.bid(), np.arange(0.0, 169.0, 6.0), obs_seed=9
    )


def test_nonmem_table_layout(small):
    t = ds.to_nonmem(small)
    assert tuple(t.columns) == ds.NONMEM_COLUMNS
    n_obs = 2 * small.times_h.size
    assert len(t) == small.n_patients * (len(small.regimen) + n_obs)
    doses = t[t.EVID == 1]
    assert (doses.MDV == 1).all() and (doses.CMT == ds.CMT_DEPOT).all()
    assert doses.AMT.sum() == pytest.approx(small.n_patients * small.regimen.total_mg)
    first = t[t.ID == t.ID.iloc[0]]
    assert first.TIME.is_monotonic_increasing
    at_zero = first[first.TIME == 0]
    assert at_zero.EVID.tolist() == [0, 0, 1]  # pre-dose samples before the dose
    conc = t[(t.EVID == 0) & (t.CMT == ds.CMT_CENTRAL)].DV.to_numpy().reshape(small.n_patients, -1)
    np.testing.assert_array_equal(conc, small.conc_obs)


def test_nonmem_csv_round_trip_is_exact(small, tmp_path):
    t = ds.to_nonmem(small)
    back = ds.read_nonmem_csv(ds.write_nonmem_csv(t, tmp_path / "data.csv"))
    pd.testing.assert_frame_equal(back, t, check_exact=True)


def test_observations_from_nonmem(small):
    ids, times, pd_obs = ds.observations_from_nonmem(ds.to_nonmem(small), ds.CMT_RESPONSE)
    np.testing.assert_array_equal(ids, small.population.ids)
    np.testing.assert_array_equal(times, small.times_h)
    np.testing.assert_array_equal(pd_obs, small.pd_obs)


def test_bad_nonmem_tables(small):
    t = ds.to_nonmem(small)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['DV'\]"):
        ds.check_nonmem(t.drop(columns="DV"))
    bad = t.copy()
    bad.loc[3, "WT"] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        ds.check_nonmem(bad)
    bad = t.copy()
    bad.loc[bad.EVID == 1, "AMT"] = -1.0
    with pytest.raises(ValueError, match="AMT"):
        ds.check_nonmem(bad)
    bad = t.iloc[::-1]
    with pytest.raises(ValueError, match="sorted"):
        ds.check_nonmem(bad)


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


def test_at_times_rejects_times_not_sampled(small):
    with pytest.raises(ValueError, match="not all among"):
        small.at_times([0.0, 1.0])
