"""The NONMEM-style table: layout, exact round trip, and a strict reader that changes no
value and names the IDs and records of every problem (issue: "a strict NONMEM reader")."""

import io

import numpy as np
import pandas as pd
import pytest

from pkpd_lib import datasets as ds
from pkpd_lib import nonmem as nm
from pkpd_lib import regimens as reg
from pkpd_lib.population import sample_population

HEADER = "ID,TIME,AMT,EVID,MDV,CMT,DV,WT,AGE,SEX"
GOOD = [
    "1,0,100,1,1,1,0,70,40,0",
    "1,2,0,0,0,2,1.5,70,40,0",
    "1,2,0,0,0,6,101,70,40,0",
    "2,0,100,1,1,1,0,80,50,1",
    "2,2,0,0,0,2,1.2,80,50,1",
    "2,2,0,0,0,6,99,80,50,1",
]


@pytest.fixture(scope="module")
def small():
    return ds.simulate_dataset(
        sample_population(5, seed=2), reg.bid(), np.arange(0.0, 169.0, 6.0), obs_seed=9
    )


def _read(lines, header=HEADER, sep=None):
    return nm.read_nonmem_csv(io.StringIO("\n".join([header, *lines]) + "\n"), sep=sep)


def _with(record: int, column: str, value: str) -> list[str]:
    lines = [ln.split(",") for ln in GOOD]
    lines[record - 1][HEADER.split(",").index(column)] = value
    return [",".join(ln) for ln in lines]


def test_table_layout(small):
    t = nm.to_nonmem(small)
    assert tuple(t.columns) == nm.NONMEM_COLUMNS
    assert len(t) == small.n_patients * (len(small.regimen) + 2 * small.times_h.size)
    doses = t[t.EVID == 1]
    assert (doses.MDV == 1).all() and (doses.CMT == nm.CMT_DEPOT).all()
    assert doses.AMT.sum() == pytest.approx(small.n_patients * small.regimen.total_mg)
    first = t[t.ID == t.ID.iloc[0]]
    assert first.TIME.is_monotonic_increasing
    assert first[first.TIME == 0].EVID.tolist() == [0, 0, 1]  # pre-dose samples first
    conc = t[(t.EVID == 0) & (t.CMT == nm.CMT_CENTRAL)].DV.to_numpy()
    np.testing.assert_array_equal(conc.reshape(small.n_patients, -1), small.conc_obs)


def test_csv_round_trip_is_exact_and_atomic(small, tmp_path):
    t = nm.to_nonmem(small)
    path = nm.write_nonmem_csv(t, tmp_path / "data.csv")
    pd.testing.assert_frame_equal(nm.read_nonmem_csv(path), t, check_exact=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        nm.write_nonmem_csv(t, path)
    nm.write_nonmem_csv(t, path, overwrite=True)


def test_observations_from_nonmem(small):
    ids, times, pd_obs = nm.observations_from_nonmem(nm.to_nonmem(small), nm.CMT_RESPONSE)
    np.testing.assert_array_equal(ids, small.population.ids)
    np.testing.assert_array_equal(times, small.times_h)
    np.testing.assert_array_equal(pd_obs, small.pd_obs)


def test_real_world_file_shapes():
    """BOM, Windows line ends, a comment line, '.' for a missing DV, semicolons."""
    text = "\ufeff# study 1, exported\r\n" + HEADER + "\r\n" + "\r\n".join(GOOD) + "\r\n"
    a = nm.read_nonmem_csv(io.StringIO(text))
    b = nm.read_nonmem_csv(io.StringIO(text.replace(",", ";")))
    c = nm.read_nonmem_csv(io.StringIO(text.replace(",", "\t")))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    assert a["ID"].tolist() == [1, 1, 1, 2, 2, 2] and a["ID"].dtype == "int64"
    missing = _read([*GOOD[:2], "1,2,0,0,1,6,.,70,40,0", *GOOD[3:]])
    assert np.isnan(missing.loc[2, "DV"])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (_with(2, "ID", "1.2"), r"ID must hold whole numbers; not at ID 1.2 \(record 2\)"),
        (_with(4, "ID", "1e20"), r"IDs must be at most 2\*\*53"),
        (_with(4, "SEX", "0.6"), r"SEX must hold whole numbers"),
        (_with(1, "TIME", "-1"), r"TIME must be >= 0 h: ID 1 \(record 1\)"),
        (_with(2, "DV", "inf"), "DV must be finite where MDV = 0"),
        (_with(4, "SEX", "2"), r"SEX must be 0 \(male\) or 1 \(female\)"),
        (_with(4, "WT", "-80"), "WT must be > 0 kg"),
        (_with(2, "AMT", "5"), "AMT must be 0 on observation rows"),
        (_with(1, "AMT", "0"), "AMT must be > 0 mg on dose rows"),
        (_with(1, "MDV", "0"), r"MDV must be 1 on dose rows"),
        (_with(3, "WT", "71"), r"WT must be constant within an ID: ID 1 \(record 3\)"),
        ([*GOOD, GOOD[-1]], r"duplicated records: ID 2 \(record 7\)"),
        ([*GOOD, "3,0,100,1,1,1,0,60,30,0"], r"doses only\): ID 3 \(record 7\)"),
        ([GOOD[1], GOOD[0], *GOOD[2:]], "TIME must be sorted within each ID"),
        (_with(5, "WT", "."), "column WT has missing values at ID 2 \\(record 5\\)"),
        (_with(5, "CMT", "x"), "column CMT has non-numeric values"),
        (_with(5, "EVID", "2"), "EVID must be 0"),
    ],
)
def test_reader_refuses_and_names_the_record(lines, message):
    with pytest.raises(ValueError, match=message):
        _read(lines)


def test_separator_problems_are_explained():
    with pytest.raises(ValueError, match="semicolon-separated: pass sep="):
        _read([ln.replace(",", ";") for ln in GOOD], header=HEADER.replace(",", ";"), sep=",")
    lacks = r"lacks column\(s\) \['DV', 'WT', 'AGE', 'SEX'\]; found"
    with pytest.raises(ValueError, match=lacks):
        _read([ln.rsplit(",", 4)[0] for ln in GOOD], header="ID,TIME,AMT,EVID,MDV,CMT")


def test_dose_only_id_does_not_vanish(small):
    t = nm.to_nonmem(small)
    no_pd = t[~((t.ID == t.ID.iloc[0]) & (t.CMT == nm.CMT_RESPONSE))]
    with pytest.raises(ValueError, match="have no observation with CMT == 6"):
        nm.observations_from_nonmem(no_pd, nm.CMT_RESPONSE)
