"""The example data file of the how-to page "Your own data" is the one its generator
writes, and it reads as the page says."""

import importlib.util
from pathlib import Path

import pytest

from pkpd_lib.pmx import nonmem

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "data" / "example_nonmem.csv"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_example_data", ROOT / "tools" / "make_example_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_committed_file_is_what_the_generator_writes(tmp_path):
    out = tmp_path / "example.csv"
    _generator().main(["--out", str(out)])
    assert out.read_bytes() == FILE.read_bytes()


def test_file_reads_with_expanded_doses_and_extra_columns():
    table = nonmem.read_nonmem_csv(FILE)
    assert table["ID"].nunique() == 120
    assert (table[table["EVID"] == 1].groupby("ID").size() == 7).all()
    assert {"CRCL", "SITE"} <= set(table.columns)
    conc = nonmem.observations(table, nonmem.CMT_CENTRAL, ["WT", "AGE", "SEX"])
    resp = nonmem.observations(table, nonmem.CMT_RESPONSE)
    assert conc.dv.shape == (120, 6) and resp.dv.shape == (120, 8)
    assert (resp.times_h[:, 0] == 0).all()
