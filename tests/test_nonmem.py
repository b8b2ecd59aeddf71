"""The NONMEM-style table: layout, exact round trip, and a strict reader that changes no
value and names the IDs and records of every problem."""

import io

import numpy as np
import pandas as pd
import pytest

from pkpd_lib.pmx import nonmem as nm
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx import warfarin
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.study import datasets as ds

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
        (_with(5, "EVID", "5"), r"EVID must be 0 \(observation\), 1 \(dose\) or 2"),
        (
            _with(5, "EVID", "2"),
            r"MDV must be 1 on other-event rows \(EVID = 2\): ID 2 \(record 5\)",
        ),
        (_with(5, "CMT", "0"), r"CMT must be a positive integer: ID 2 \(record 5\)"),
    ],
)
def test_reader_refuses_and_names_the_record(lines, message):
    with pytest.raises(ValueError, match=message):
        _read(lines)


def test_separator_problems_are_explained():
    with pytest.raises(ValueError, match="semicolon-separated: pass sep="):
        _read([ln.replace(",", ";") for ln in GOOD], header=HEADER.replace(",", ";"), sep=",")
    lacks = r"lacks column\(s\) \['DV'\]; found"
    with pytest.raises(ValueError, match=lacks):
        _read([ln.rsplit(",", 4)[0] for ln in GOOD], header="ID,TIME,AMT,EVID,MDV,CMT")


def test_dose_only_id_does_not_vanish(small):
    t = nm.to_nonmem(small)
    no_pd = t[~((t.ID == t.ID.iloc[0]) & (t.CMT == nm.CMT_RESPONSE))]
    with pytest.raises(ValueError, match="have no observation with CMT == 6"):
        nm.observations_from_nonmem(no_pd, nm.CMT_RESPONSE)


# --- real data sets: every column, optional covariates, ADDL/II, refused dose items ----

BARE = "ID,TIME,AMT,EVID,MDV,CMT,DV"


def _text(header, lines):
    return io.StringIO("\n".join([header, *lines]) + "\n")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [*GOOD, "1,4,0,0,0,2,1.1,70,40,0"],
            r"an ID comes back after another ID .*: ID 1 \(record 7; first at record 1\)",
        ),
        (
            _with(2, "ID", "1.0000000000000001"),
            r"column ID must hold whole numbers; not at ID 1.0000000000000001 \(record 2\)",
        ),
        (_with(4, "ID", "9007199254740993"), r"IDs must be at most 2\*\*53 in size"),
        (_with(1, "EVID", "3"), r"EVID 3 and 4 \(reset events\) are not supported: ID 1"),
        (_with(1, "EVID", "4"), r"EVID 3 and 4 \(reset events\) are not supported: ID 1"),
        ([], r"no records \(a header only"),
        ([GOOD[0] + ",9", *GOOD[1:]], r"as many fields as the header \(10\): record 1 has 11"),
        ([*GOOD[:3], GOOD[3][:-2], *GOOD[4:]], r"as many fields .*: record 4 has 9"),
    ],
)
def test_reader_refuses_what_nonmem_would_read_otherwise(lines, message):
    with pytest.raises(ValueError, match=message):
        _read(lines)


def test_an_empty_file_is_refused():
    with pytest.raises(ValueError, match="empty: no header, no records"):
        nm.read_nonmem_csv(io.StringIO("# exported, nothing in it\n"))


def test_unknown_columns_are_kept_and_checked():
    header = HEADER + ",RACE,CRCL"
    lines = [
        ln + extra
        for ln, extra in zip(GOOD, [",1,90", ",1,.", ",1,95"] + [",3,60"] * 3, strict=True)
    ]
    t = _read(lines, header=header)
    assert list(t.columns) == [*nm.NONMEM_COLUMNS, "RACE", "CRCL"]
    assert t["RACE"].tolist() == [1, 1, 1, 3, 3, 3] and t["RACE"].dtype == "float64"
    assert np.isnan(t.loc[1, "CRCL"]) and t.loc[2, "CRCL"] == 95
    bad = [*lines[:4], lines[4].replace(",3,60", ",asian,60"), lines[5]]
    with pytest.raises(
        ValueError, match=r"column RACE has non-numeric values at ID 2 \(record 5\)"
    ):
        _read(bad, header=header)


def test_wt_age_sex_are_optional_and_any_positive_cmt_is_read(tmp_path):
    lines = ["1,0,100,1,1,1,.", "1,0.5,0,0,0,3,4.2", "1,1,0,2,1,3,.", "1,7.25,0,0,0,3,2.0"]
    t = nm.read_nonmem_csv(_text(BARE, lines))
    assert list(t.columns) == list(nm.REQUIRED_COLUMNS)
    assert t["CMT"].tolist() == [1, 3, 3, 3] and t["EVID"].tolist() == [1, 0, 2, 0]
    path = nm.write_nonmem_csv(t, tmp_path / "bare.csv")
    pd.testing.assert_frame_equal(nm.read_nonmem_csv(path), t, check_exact=True)


def test_addl_and_ii_are_expanded_into_dose_records():
    header = BARE + ",WT,ADDL,II"
    lines = [
        "1,0,100,1,1,1,.,70,2,12",
        "1,12,0,0,0,2,0.8,70,.,.",  # a trough at the time of an implied dose
        "1,30,0,0,0,2,1.1,70,0,0",
        "2,0,50,1,1,1,.,80,0,0",
        "2,3,0,0,0,2,0.5,80,0,0",
    ]
    t = nm.read_nonmem_csv(_text(header, lines))
    assert list(t.columns) == [*nm.REQUIRED_COLUMNS, "WT"]
    one = t[t["ID"] == 1]
    assert one["TIME"].tolist() == [0.0, 12.0, 12.0, 24.0, 30.0]
    assert one["EVID"].tolist() == [1, 0, 1, 1, 0]
    assert one.loc[one["EVID"] == 1, "AMT"].tolist() == [100.0] * 3
    assert (one["WT"] == 70).all() and len(t[t["ID"] == 2]) == 2
    only_addl = [lines[0].replace(",2,12", ",2,0"), *lines[1:]]
    with pytest.raises(ValueError, match=r"ADDL > 0 needs II > 0 h.*ID 1 \(record 1\)"):
        nm.read_nonmem_csv(_text(header, only_addl))
    clash = [*lines[:2], "1,24,100,1,1,1,.,70,0,0", *lines[2:]]
    with pytest.raises(ValueError, match=r"falls on another dose .*ID 1 \(record 1\) at 24 h"):
        nm.read_nonmem_csv(_text(header, clash))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("RATE", "50", r"infusions \(RATE\) are not supported: ID 1 \(record 1\)"),
        ("RATE", "-2", r"infusions \(RATE\) are not supported: ID 1 \(record 1\)"),
        ("SS", "1", r"steady-state doses \(SS\) are not supported: ID 1 \(record 1\)"),
    ],
)
def test_infusions_and_steady_state_are_refused_not_read_as_boluses(column, value, message):
    header = BARE + ",ADDL,II,RATE,SS"
    dose = {"RATE": "0", "SS": "0"} | {column: value}
    lines = [f"1,0,100,1,1,1,.,6,12,{dose['RATE']},{dose['SS']}", "1,2,0,0,0,2,1.5,0,0,0,0"]
    with pytest.raises(ValueError, match=message):
        nm.read_nonmem_csv(_text(header, lines))
    zeros = nm.read_nonmem_csv(_text(header, ["1,0,100,1,1,1,.,6,12,0,0", lines[1]]))
    assert (zeros["RATE"] == 0).all() and (zeros["SS"] == 0).all() and len(zeros) == 8


# --- observations: any doses, any times ----------------------------------------------

IRREGULAR = [
    "1,0,100,1,1,1,.,70,2",
    "1,0.5,0,0,0,2,2.0,70,2",
    "1,8,50,1,1,1,.,70,2",
    "1,9.75,0,0,0,2,3.0,70,2",
    "1,9.75,0,0,0,6,88,70,2",
    "1,30,0,0,1,2,.,70,2",  # a missing sample: not an observation
    "2,0,80,1,1,1,.,60,1",
    "2,1,0,2,1,2,.,60,1",  # another event
    "2,3.2,0,0,0,2,1.2,60,1",
    "2,10,80,1,1,1,.,60,1",
    "2,22,80,1,1,1,.,60,1",
    "2,23,0,0,0,2,0.9,60,1",
    "2,49,0,0,0,2,0.4,60,1",
]


def test_observations_of_irregular_times_and_several_doses():
    t = nm.read_nonmem_csv(_text(BARE + ",WT,RACE", IRREGULAR))
    obs = nm.observations(t, nm.CMT_CENTRAL, covariates=["WT", "RACE"])
    assert obs.ids.tolist() == [1, 2] and obs.n_observations == 5
    np.testing.assert_array_equal(obs.times_h, [[0.5, 9.75, 9.75], [3.2, 23, 49]])
    np.testing.assert_array_equal(obs.dv, [[2.0, 3.0, np.nan], [1.2, 0.9, 0.4]])
    assert obs.covariates["WT"].tolist() == [70, 60] and obs.covariates["RACE"].tolist() == [2, 1]
    doses = obs.extra["doses"]
    np.testing.assert_array_equal(doses["times_h"], [[0, 8, 8], [0, 10, 22]])
    np.testing.assert_array_equal(doses["amounts_mg"], [[100, 50, 0], [80, 80, 80]])
    np.testing.assert_array_equal(doses["cmt"], [[1, 1, 0], [1, 1, 1]])
    assert doses["count"].tolist() == [2, 3]


def test_observations_refuses_and_names_subject_and_column():
    t = nm.read_nonmem_csv(_text(BARE + ",WT,RACE", IRREGULAR))
    with pytest.raises(ValueError, match=r"IDs \[2\] have no observation with CMT == 6"):
        nm.observations(t, nm.CMT_RESPONSE)
    with pytest.raises(ValueError, match=r"observations are in CMT \[2, 6\]: pass dv_cmt"):
        nm.observations(t)
    varying = t.assign(RACE=np.where(np.arange(len(t)) == 9, 3.0, t["RACE"]))
    with pytest.raises(ValueError, match=r"RACE varies within subject ID 2: 1 at record 7, 3 at"):
        nm.observations(varying, nm.CMT_CENTRAL, covariates=["RACE"])
    gap = t.assign(RACE=np.where(np.arange(len(t)) == 3, np.nan, t["RACE"]))
    with pytest.raises(
        ValueError, match=r"covariate RACE is missing for subject ID 1 \(record 4\)"
    ):
        nm.observations(gap, nm.CMT_CENTRAL, covariates=["RACE"])
    with pytest.raises(ValueError, match="no column 'CRCL'"):
        nm.observations(t, nm.CMT_CENTRAL, covariates=["CRCL"])


def test_observations_agree_with_the_pivot_and_the_regimens(small):
    obs = nm.observations(nm.to_nonmem(small), nm.CMT_RESPONSE, covariates=["WT", "SEX"])
    ids, times, pd_obs = nm.observations_from_nonmem(nm.to_nonmem(small), nm.CMT_RESPONSE)
    np.testing.assert_array_equal(obs.ids, ids)
    np.testing.assert_array_equal(obs.times_h, np.tile(times, (ids.size, 1)))
    np.testing.assert_array_equal(obs.dv, pd_obs)
    np.testing.assert_array_equal(obs.covariates["WT"], small.population.covariates["WT"])
    for row, regimen in enumerate(small.regimens):
        np.testing.assert_array_equal(obs.extra["doses"]["times_h"][row], regimen.times_h)
        np.testing.assert_array_equal(obs.extra["doses"]["amounts_mg"][row], regimen.amounts_mg)


def test_observations_keep_the_replicate_assays_of_the_warfarin_data():
    table = warfarin.load()
    obs = nm.observations(table, nm.CMT_CENTRAL, ["WT", "AGE", "SEX"], replicates=True)
    ref = warfarin.observations(table, nm.CMT_CENTRAL)
    np.testing.assert_array_equal(obs.dv, ref.dv)
    for name in ("WT", "AGE", "SEX"):
        np.testing.assert_array_equal(obs.covariates[name], ref.covariates[name])
    np.testing.assert_array_equal(obs.extra["doses"]["amounts_mg"][:, 0], ref.extra["dose_mg"])
