"""NONMEM-style long tables: build one from a data set, write it, read one back strictly.

The layout (one row per dose or observation, sorted by ID and TIME):

======  =====================================================================
column  meaning
======  =====================================================================
ID      patient identifier (integer)
TIME    time since the first dose, h (>= 0, sorted within each ID)
AMT     dose in mg on dose rows (> 0), 0 on observation rows
EVID    1 dose, 0 observation
MDV     1 on dose rows; on observation rows 0 (DV observed) or 1 (DV missing)
CMT     1 depot (doses), 2 central (concentration, mg/L), 6 response (PD)
DV      the observation; finite on rows with MDV = 0
WT      weight, kg (> 0, constant within an ID)
AGE     age, years (> 0, constant within an ID)
SEX     0 male, 1 female (constant within an ID)
======  =====================================================================

The reader is strict because a table is usually someone else's file: every value is
checked before any conversion, so no value changes on reading (an ID of 1.2 is refused,
not rounded to 1), and every problem is reported with the IDs and file rows it concerns.
It reads the forms such files come in: a byte-order mark, Windows line ends, comment
lines starting with ``#``, ``.`` for a missing value, and comma, semicolon, tab or
whitespace separators (detected, or named with ``sep=``).

Examples
--------
>>> import io
>>> text = (
...     "ID,TIME,AMT,EVID,MDV,CMT,DV,WT,AGE,SEX\\n"
...     "1,0,100,1,1,1,.,70,40,0\\n"
...     "1,2,0,0,0,2,1.5,70,40,0\\n"
... )
>>> read_nonmem_csv(io.StringIO(text))[["ID", "TIME", "DV"]]
   ID  TIME   DV
0   1   0.0  NaN
1   1   2.0  1.5
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_path
from .population import COVARIATE_NAMES

#: Compartment numbers used in the table.
CMT_DEPOT, CMT_CENTRAL, CMT_RESPONSE = 1, 2, 6
NONMEM_COLUMNS = ("ID", "TIME", "AMT", "EVID", "MDV", "CMT", "DV", *COVARIATE_NAMES)
INT_COLUMNS = ("ID", "EVID", "MDV", "CMT", "SEX")
#: Largest ID read exactly (integers beyond 2**53 are not exact in a float column).
MAX_ID = 2**53
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}


def to_nonmem(data) -> pd.DataFrame:
    """A NONMEM-style long table of a :class:`~pkpd_lib.datasets.Dataset`.

    Rows are sorted by ID and TIME; at a time with both a dose and samples, the samples
    come first (they are pre-dose troughs).
    """
    pop, n, t = data.population, data.n_patients, data.times_h
    cov = pop.covariates.reset_index(drop=True)
    regs = data.regimens
    counts = [len(r) for r in regs]
    doses = pd.DataFrame(
        {
            "ID": np.repeat(pop.ids, counts),
            "TIME": np.concatenate([r.times_h for r in regs]),
            "AMT": np.concatenate([r.amounts_mg for r in regs]),
            "EVID": 1,
            "MDV": 1,
            "CMT": CMT_DEPOT,
            "DV": 0.0,
            "_patient": np.repeat(np.arange(n), counts),
        }
    )
    obs = [
        pd.DataFrame(
            {
                "ID": np.repeat(pop.ids, t.size),
                "TIME": np.tile(t, n),
                "AMT": 0.0,
                "EVID": 0,
                "MDV": 0,
                "CMT": cmt,
                "DV": dv.reshape(-1),
                "_patient": np.repeat(np.arange(n), t.size),
            }
        )
        for cmt, dv in ((CMT_CENTRAL, data.conc_obs), (CMT_RESPONSE, data.pd_obs))
    ]
    df = pd.concat([doses, *obs], ignore_index=True)
    df = df.sort_values(["_patient", "TIME", "EVID", "CMT"], kind="stable", ignore_index=True)
    for name in COVARIATE_NAMES:
        df[name] = cov[name].to_numpy()[df["_patient"].to_numpy()]
    return _with_dtypes(df.drop(columns="_patient")[list(NONMEM_COLUMNS)])


def _with_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype({c: ("int64" if c in INT_COLUMNS else "float64") for c in NONMEM_COLUMNS})


def write_nonmem_csv(table: pd.DataFrame, path: str | Path, overwrite: bool = False) -> Path:
    """Check ``table`` and write it to CSV atomically; floats keep every digit (exact round
    trip). An existing file is replaced only with ``overwrite=True``."""
    check_nonmem(table)
    with atomic_path(path, overwrite) as tmp:
        table.to_csv(tmp, index=False, float_format="%.17g", na_rep=".")
    return Path(path)


def _rows(mask, table: pd.DataFrame, limit: int = 5) -> str:
    """'ID 3 (record 12), ...' for the first rows where ``mask`` holds; records count the
    data lines of a file from 1 (header and comment lines not counted)."""
    where = np.flatnonzero(np.asarray(mask))
    shown = [f"ID {table['ID'].iloc[i]} (record {i + 1})" for i in where[:limit]]
    more = f" and {where.size - limit} more" if where.size > limit else ""
    return ", ".join(shown) + more


def _sniff_separator(text: str) -> str | None:
    """The separator of a CSV text (comma, semicolon or tab), or None for whitespace."""
    header = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t").delimiter
    except csv.Error:
        return None


def read_nonmem_csv(source, sep: str | None = None, replicates: bool = False) -> pd.DataFrame:
    """Read and check a NONMEM-style CSV file (a path or an open text file).

    ``sep``: the separator, detected when None. Raises ``ValueError`` naming every
    problem found (see :func:`check_nonmem`), with IDs and file rows; no value is
    changed by reading: integer columns must hold whole numbers, IDs at most 2**53.
    ``replicates``: accept repeated observation records (replicate assays of one
    sample, see :func:`check_nonmem`).
    Returns the table with integer and float columns; ``DV`` is NaN where it was ``.``.
    """
    if isinstance(source, str | Path):
        text = Path(source).read_text(encoding="utf-8-sig")
    else:
        text = source.read()
        text = text.lstrip("\ufeff")
    sep = sep if sep is not None else _sniff_separator(text)
    raw = pd.read_csv(
        io.StringIO(text),
        sep=sep if sep is not None else r"\s+",
        comment="#",
        dtype=str,
        keep_default_na=False,
        skipinitialspace=True,
    )
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in NONMEM_COLUMNS if c not in raw.columns]
    if missing:
        found = list(raw.columns)
        hint = ""
        if len(found) == 1:
            seen = [name for s, name in _SEPARATORS.items() if s in found[0]]
            hint = f"; the header looks {'/'.join(seen) or 'space'}-separated: pass sep="
        raise ValueError(f"NONMEM table lacks column(s) {missing}; found {found}{hint}")
    table = pd.DataFrame(index=raw.index)
    for name in NONMEM_COLUMNS:
        text_values = raw[name].str.strip()
        blank = text_values.isin(("", "."))
        if blank.any() and name != "DV":
            raise ValueError(f"column {name} has missing values at {_rows(blank, raw)}")
        values = pd.to_numeric(text_values.mask(blank), errors="coerce")
        unreadable = values.isna() & ~blank
        if unreadable.any():
            raise ValueError(f"column {name} has non-numeric values at {_rows(unreadable, raw)}")
        if name in INT_COLUMNS:
            fractional = values.notna() & (values != np.round(values))
            if fractional.any():
                raise ValueError(
                    f"column {name} must hold whole numbers; not at {_rows(fractional, raw)}"
                )
            if name == "ID" and (values.abs() > MAX_ID).any():
                big = values.abs() > MAX_ID
                raise ValueError(f"IDs must be at most 2**53 in size; not at {_rows(big, raw)}")
        table[name] = values
    check_nonmem(table, replicates=replicates)
    return _with_dtypes(table)


def check_nonmem(table: pd.DataFrame, replicates: bool = False) -> None:
    """Raise ``ValueError`` naming the IDs and rows of every convention a table breaks.

    Checked: the columns; finite values (DV may be missing where MDV = 1); EVID in
    {0, 1}; MDV = 1 on dose rows; AMT > 0 on dose rows and 0 elsewhere; CMT in {1, 2, 6};
    TIME >= 0 and sorted within each ID; no duplicated record (ID, TIME, EVID, CMT);
    WT > 0, AGE > 0, SEX in {0, 1}, each constant within an ID; every ID has an
    observation. ``replicates=True`` accepts repeated *observation* records (two assays
    of one sample are two observations, as NONMEM reads them); doses are never repeated.
    """
    missing = [c for c in NONMEM_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"NONMEM table lacks column(s) {missing}")
    t = table[list(NONMEM_COLUMNS)].reset_index(drop=True)
    problems = []

    def check(mask, message):
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            problems.append(f"{message}: {_rows(mask, t)}")

    values = t.drop(columns="DV").to_numpy(dtype=float)
    check(~np.isfinite(values).all(axis=1), "values must be finite (DV may be missing)")
    dose, obs = t["EVID"] == 1, t["EVID"] == 0
    check(~(dose | obs), "EVID must be 0 (observation) or 1 (dose)")
    check(~t["MDV"].isin((0, 1)), "MDV must be 0 or 1")
    check(dose & (t["MDV"] != 1), "MDV must be 1 on dose rows (EVID = 1)")
    check(dose & ~(t["AMT"] > 0), "AMT must be > 0 mg on dose rows")
    check(obs & (t["AMT"] != 0), "AMT must be 0 on observation rows")
    check(obs & (t["MDV"] == 0) & ~np.isfinite(t["DV"]), "DV must be finite where MDV = 0")
    check(np.isinf(t["DV"]), "DV must not be infinite")
    check(~t["CMT"].isin((CMT_DEPOT, CMT_CENTRAL, CMT_RESPONSE)), "CMT must be 1, 2 or 6")
    check(t["TIME"] < 0, "TIME must be >= 0 h")
    unsorted = t.groupby("ID", sort=False)["TIME"].diff() < 0
    check(unsorted, "TIME must be sorted within each ID")
    repeated = t.duplicated(["ID", "TIME", "EVID", "CMT"], keep="first")
    check(repeated & (dose | (not replicates)), "duplicated records")
    check(~(t["WT"] > 0), "WT must be > 0 kg")
    check(~(t["AGE"] > 0), "AGE must be > 0 years")
    check(~t["SEX"].isin((0, 1)), "SEX must be 0 (male) or 1 (female)")
    for name in COVARIATE_NAMES:
        first = t.groupby("ID", sort=False)[name].transform("first")
        check(t[name] != first, f"{name} must be constant within an ID")
    observed = t[obs & (t["MDV"] == 0)]["ID"].unique()
    check(~t["ID"].isin(observed) & dose, "IDs without any observation (doses only)")
    if problems:
        raise ValueError("NONMEM table: " + "; ".join(problems))


def observations_from_nonmem(
    table: pd.DataFrame, cmt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pivot the observations of compartment ``cmt`` to arrays.

    Returns ``(ids, times_h, dv)`` with ``dv`` of shape (N, T); every ID in the table must
    be sampled in ``cmt`` at the same times (an ID without such samples is an error, not
    silently dropped).
    """
    check_nonmem(table)
    obs = table[(table["EVID"] == 0) & (table["CMT"] == cmt) & (table["MDV"] == 0)]
    if obs.empty:
        raise ValueError(f"no observations with CMT == {cmt}")
    absent = sorted(set(table["ID"]) - set(obs["ID"]))
    if absent:
        raise ValueError(f"IDs {absent[:10]} have no observation with CMT == {cmt}")
    wide = obs.pivot(index="ID", columns="TIME", values="DV")
    if wide.isna().any().any():
        raise ValueError("patients are not all sampled at the same times")
    return wide.index.to_numpy(), wide.columns.to_numpy(dtype=float), wide.to_numpy()
