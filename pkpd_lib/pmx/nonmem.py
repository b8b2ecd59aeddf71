"""NONMEM-style long tables: build one from a data set, write it, read one back strictly,
and turn one into :class:`~pkpd_lib.pmx.nlme.Observations`.

The layout: one row (record) per event; each ID's records together, sorted by TIME.
These columns are required:

======  =====================================================================
column  meaning
======  =====================================================================
ID      subject identifier (integer); NONMEM starts a new individual whenever the ID
        changes, so an ID may not come back after another ID
TIME    time since the first dose, h (>= 0, sorted within each ID)
AMT     dose in mg on dose rows (> 0), 0 on other rows
EVID    0 observation, 1 dose (a bolus), 2 other event (neither dose nor
        observation); 3 and 4 (reset events) are refused
MDV     1 on dose and other-event rows; on observation rows 0 (DV observed) or 1
        (DV missing)
CMT     compartment, a positive integer; the book's tables use 1 depot (doses),
        2 central (concentration, mg/L) and 6 response (PD)
DV      the observation; finite on rows with MDV = 0
======  =====================================================================

These are optional and checked when present:

======  =====================================================================
column  meaning
======  =====================================================================
WT      weight, kg (> 0, constant within an ID)
AGE     age, years (> 0, constant within an ID)
SEX     0 male, 1 female (constant within an ID)
ADDL    additional doses (a whole number, on dose rows only): ADDL more doses like
        the record's, at TIME + k * II h for k = 1..ADDL
II      interdose interval, h (> 0 on the dose rows with ADDL > 0, else 0)
SS      must be 0: steady-state doses are not supported (refused, naming the rows)
RATE    must be 0: infusions are not supported (refused, naming the rows)
======  =====================================================================

Any other column (a covariate, an occasion, a flag) is carried through as float64
numbers, after the columns above; ``.`` or an empty field in it is a missing value
(NaN). In ADDL, II, SS and RATE ``.`` means 0, as for NONMEM.

The reader is strict because a table is usually someone else's file: every value is
checked before any conversion, so no value changes on reading (an ID of 1.2, or of
1.0000000000000001, is refused, not rounded to 1), and every problem is reported with the
IDs and file rows it concerns. It reads the forms such files come in: a byte-order mark,
Windows line ends, comment lines starting with ``#``, ``.`` for a missing value, and
comma, semicolon, tab or whitespace separators (detected, or named with ``sep=``). It
returns each ADDL/II dose as records of its own (the ADDL and II columns removed; see
:func:`expand_additional_doses`).

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
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_path
from .nlme import Observations
from .population import COVARIATE_NAMES

#: Compartment numbers used in the book's tables.
CMT_DEPOT, CMT_CENTRAL, CMT_RESPONSE = 1, 2, 6
#: The columns of :func:`to_nonmem`, in its order.
NONMEM_COLUMNS = ("ID", "TIME", "AMT", "EVID", "MDV", "CMT", "DV", *COVARIATE_NAMES)
#: The columns every table needs (WT, AGE and SEX are optional).
REQUIRED_COLUMNS = ("ID", "TIME", "AMT", "EVID", "MDV", "CMT", "DV")
#: Dose items: ADDL and II are expanded into dose records; SS and RATE must be 0.
DOSE_ITEMS = ("ADDL", "II", "SS", "RATE")
INT_COLUMNS = ("ID", "EVID", "MDV", "CMT", "SEX")
_WHOLE_COLUMNS = (*INT_COLUMNS, "ADDL", "SS")
_NOT_MISSING = (*REQUIRED_COLUMNS[:-1], *COVARIATE_NAMES)
#: Largest ID read exactly (integers beyond 2**53 are not exact in a float column).
MAX_ID = 2**53
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}


def to_nonmem(data) -> pd.DataFrame:
    """A NONMEM-style long table of a :class:`~pkpd_lib.study.datasets.Dataset`.

    Rows are sorted by ID and TIME; at a time with both a dose and samples, the samples
    come first (they are pre-dose troughs).

    Parameters
    ----------
    data : Dataset
        A data set of :mod:`pkpd_lib.study.datasets` (read: its ``population``,
        ``regimens``, shared ``times_h`` (T,), ``conc_obs`` and ``pd_obs`` (N, T)).

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`NONMEM_COLUMNS`: a dose record (CMT :data:`CMT_DEPOT`, AMT
        mg, DV 0) for each dose, and observation records of the concentration (CMT
        :data:`CMT_CENTRAL`, mg/L) and the PD (CMT :data:`CMT_RESPONSE`, biomarker units)
        at every sampling time; not checked (:func:`check_nonmem`). A data set with
        several observed biomarkers (``data.biomarkers_obs``) has a record of each, in
        the compartment of its state (its position in the model's states, from 1: ``R``
        3 and ``M`` 4 for :data:`~pkpd_lib.pmx.model.FEEDBACK_TOLERANCE`), and a ``DVID``
        column after CMT: 1 for the concentration, 2, 3, ... for the biomarkers in
        their order, 0 on dose records (read them back with
        :func:`observations`'s ``dvid``).
    """
    pop, n, t = data.population, data.n_patients, data.times_h
    observed = _observed_compartments(data)
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
        for cmt, dv in observed
    ]
    df = pd.concat([doses, *obs], ignore_index=True)
    df = df.sort_values(["_patient", "TIME", "EVID", "CMT"], kind="stable", ignore_index=True)
    for name in COVARIATE_NAMES:
        df[name] = cov[name].to_numpy()[df["_patient"].to_numpy()]
    columns = list(NONMEM_COLUMNS)
    if len(observed) > 2:  # several biomarkers: told apart by DVID as well
        codes = {cmt: k for k, (cmt, _) in enumerate(observed, start=1)}
        df["DVID"] = np.where(df["EVID"] == 0, df["CMT"].map(codes), 0)
        columns.insert(columns.index("CMT") + 1, "DVID")
    table = _with_dtypes(df.drop(columns="_patient")[columns])
    return table.astype({"DVID": "int64"}) if "DVID" in columns else table


def _observed_compartments(data) -> list[tuple[int, np.ndarray]]:
    """The compartment and observations (N, T) of each observed quantity of a data set:
    the concentration, then each biomarker (:data:`CMT_RESPONSE` for a model with one,
    else the position of its state, from 1)."""
    biomarkers = data.biomarkers_obs
    if len(biomarkers) == 1:
        return [(CMT_CENTRAL, data.conc_obs), (CMT_RESPONSE, data.pd_obs)]
    states = list(data.truth.states)
    unknown = [name for name in biomarkers if name not in states]
    if unknown:
        raise ValueError(
            f"biomarkers {unknown} are not states of the model ({states}): no compartment"
        )
    return [(CMT_CENTRAL, data.conc_obs)] + [
        (states.index(name) + 1, values) for name, values in biomarkers.items()
    ]


def _with_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """int64 for the integer columns (and SS), float64 for every other column."""
    ints = (*INT_COLUMNS, "SS")
    return df.astype({c: ("int64" if c in ints else "float64") for c in df.columns})


def write_nonmem_csv(table: pd.DataFrame, path: str | Path, overwrite: bool = False) -> Path:
    """Check ``table`` and write it to CSV atomically; floats keep every digit (exact round
    trip), missing values are written as ``.``. ADDL and II columns are written as they
    are (the reader expands them into dose records).

    Parameters
    ----------
    table : pandas.DataFrame
        A NONMEM table (see :func:`check_nonmem`; replicate observation records are
        refused).
    path : str or pathlib.Path
        The file to write.
    overwrite : bool
        Replace an existing file (default False: an existing file is not replaced).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        From :func:`check_nonmem`.
    FileExistsError
        ``path`` exists and ``overwrite`` is False (from
        :func:`pkpd_lib.files.atomic_path`).
    """
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

    Parameters
    ----------
    source : str, pathlib.Path or text file
        The file.
    sep : str, optional
        The separator, detected when None (comma, semicolon, tab or whitespace).
    replicates : bool
        Accept repeated observation records (replicate assays of one sample, see
        :func:`check_nonmem`).

    Returns
    -------
    pandas.DataFrame
        Every column of the file: the required ones, then WT, AGE and SEX where present,
        then the others in the file's order; integer columns (ID, EVID, MDV, CMT, SEX,
        SS) as int64, the rest float64, NaN where the file has ``.``. Each ADDL/II dose
        is a record of its own (TIME + k * II h, after any record at that time) and the
        ADDL and II columns are removed (:func:`expand_additional_doses`).

    Raises
    ------
    ValueError
        Naming every problem found (see :func:`check_nonmem`), with IDs and file rows;
        no value is changed by reading: integer columns must hold whole numbers (checked
        on the text, so 1.0000000000000001 is not an ID), IDs at most 2**53; a file with
        a header and no records is refused.
    """
    raw = _read_records(source, sep)
    table = pd.DataFrame({name: _read_column(raw, name) for name in _ordered(raw.columns)})
    check_nonmem(table, replicates=replicates)
    return _with_dtypes(_expand(table))


def _read_records(source, sep: str | None) -> pd.DataFrame:
    """The file's records as text, columns named by the header; refuses an empty file,
    a header without records and missing required columns."""
    if isinstance(source, str | Path):
        text = Path(source).read_text(encoding="utf-8-sig")
    else:
        text = source.read()
        text = text.lstrip("\ufeff")
    sep = sep if sep is not None else _sniff_separator(text)
    _check_fields(text, sep)
    try:
        raw = pd.read_csv(
            io.StringIO(text),
            sep=sep if sep is not None else r"\s+",
            comment="#",
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
        )
    except pd.errors.EmptyDataError:
        raise ValueError("NONMEM file is empty: no header, no records") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        found = list(raw.columns)
        hint = ""
        if len(found) == 1:
            seen = [name for s, name in _SEPARATORS.items() if s in found[0]]
            hint = f"; the header looks {'/'.join(seen) or 'space'}-separated: pass sep="
        raise ValueError(f"NONMEM table lacks column(s) {missing}; found {found}{hint}")
    if raw.empty:
        raise ValueError(f"NONMEM file has no records (a header only: {list(raw.columns)})")
    return raw


def _fields(line: str, sep: str | None) -> list[str]:
    """The fields of one line (``sep`` None: separated by whitespace)."""
    if sep is None:
        return line.split()
    return next(csv.reader([line], delimiter=sep, skipinitialspace=True))


def _check_fields(text: str, sep: str | None) -> None:
    """Refuse a header with an unnamed column and records with more or fewer fields
    than the header (a parser would shift such a record's values into other columns,
    or fill it up with missing values)."""
    lines = (ln.split("#", 1)[0] for ln in text.splitlines())
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return
    header = _fields(lines[0], sep)
    unnamed = [i + 1 for i, name in enumerate(header) if not name.strip()]
    if unnamed:
        raise ValueError(f"NONMEM file: header column(s) {unnamed} have no name")
    wrong = [
        (i, n) for i, n in enumerate(len(_fields(ln, sep)) for ln in lines[1:]) if n != len(header)
    ]
    if wrong:
        shown = ", ".join(f"record {i + 1} has {n}" for i, n in wrong[:5])
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        raise ValueError(
            f"NONMEM file: every record needs as many fields as the header ({len(header)}): "
            f"{shown}{more}"
        )


def _ordered(columns) -> list[str]:
    """The required columns, then WT, AGE and SEX where present, then the others."""
    known = [c for c in NONMEM_COLUMNS if c in columns]
    return [*known, *(c for c in columns if c not in NONMEM_COLUMNS)]


def _read_column(raw: pd.DataFrame, name: str) -> pd.Series:
    """One column's numbers, checked on the text: ``.`` or an empty field is refused in
    the required columns and WT/AGE/SEX, 0 in the dose items and NaN elsewhere."""
    text = raw[name].str.strip()
    blank = text.isin(("", "."))
    if blank.any() and name in _NOT_MISSING:
        raise ValueError(f"column {name} has missing values at {_rows(blank, raw)}")
    if name in DOSE_ITEMS:
        text, blank = text.mask(blank, "0"), pd.Series(False, index=blank.index)
    values = pd.to_numeric(text.mask(blank), errors="coerce")
    unreadable = values.isna() & ~blank
    if unreadable.any():
        raise ValueError(f"column {name} has non-numeric values at {_rows(unreadable, raw)}")
    if name in _WHOLE_COLUMNS:
        _check_whole(name, text.mask(blank), raw)
    return values


def _exact(text) -> Decimal | None:
    """The exact decimal value of a field, None where it is missing or not finite."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return value if value.is_finite() else None


def _check_whole(name: str, text: pd.Series, raw: pd.DataFrame) -> None:
    """Refuse fields of an integer column that are not exact whole numbers of at most
    2**53 (checked on the text: 1.0000000000000001 would read as 1.0 in float64)."""
    exact = [_exact(s) if isinstance(s, str) else None for s in text]
    fractional = [v is not None and v != v.to_integral_value() for v in exact]
    if any(fractional):
        raise ValueError(f"column {name} must hold whole numbers; not at {_rows(fractional, raw)}")
    big = [v is not None and abs(v) > MAX_ID for v in exact]
    if any(big):
        what = "IDs" if name == "ID" else f"column {name} values"
        raise ValueError(f"{what} must be at most 2**53 in size; not at {_rows(big, raw)}")


def check_nonmem(table: pd.DataFrame, replicates: bool = False) -> None:
    """Raise ``ValueError`` naming the IDs and rows of every convention a table breaks.

    Checked: the required columns and at least one record; numeric columns; finite
    values (DV, and columns other than those of the module's tables, may be missing);
    EVID 0, 1 or 2 (3 and 4, reset events, are refused by name); MDV = 1 on dose and
    other-event rows; AMT > 0 on dose rows and 0 elsewhere; CMT a positive integer;
    TIME >= 0 and sorted within each ID; each ID's records together (an ID that comes
    back after another is refused: NONMEM would read it as a new individual); no
    duplicated record (ID, TIME, EVID, CMT); every ID that has doses or other events has
    an observation. Where present: WT > 0, AGE > 0, SEX in {0, 1}, each constant within
    an ID; ADDL a whole number and II >= 0 h, both > 0 together on dose rows and 0 on
    other rows; SS and RATE 0 (steady state and infusions are not supported).

    Parameters
    ----------
    table : pandas.DataFrame
        The table, one row per record.
    replicates : bool
        Accept repeated *observation* records (two assays of one sample are two
        observations, as NONMEM reads them); doses are never repeated.

    Raises
    ------
    ValueError
        A missing required column, no record or a non-numeric column; else one message
        listing every broken convention with the IDs and records concerned.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"NONMEM table lacks column(s) {missing}")
    if len(table) == 0:
        raise ValueError("NONMEM table has no records")
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise ValueError(f"NONMEM table: column(s) {text} must hold numbers")
    t = table.reset_index(drop=True)
    problems = [
        *_record_problems(t),
        *_subject_problems(t, replicates),
        *_covariate_problems(t),
        *_dose_item_problems(t),
    ]
    if problems:
        raise ValueError("NONMEM table: " + "; ".join(problems))


def _flag(t: pd.DataFrame, mask, message: str) -> list[str]:
    """``[message: the rows]`` where ``mask`` holds anywhere, else ``[]``."""
    mask = np.asarray(mask, dtype=bool)
    return [f"{message}: {_rows(mask, t)}"] if mask.any() else []


def _record_problems(t: pd.DataFrame) -> list[str]:
    """The conventions of single records: values, EVID, MDV, AMT, DV, CMT, TIME."""
    known = [c for c in t.columns if c in (*NONMEM_COLUMNS, *DOSE_ITEMS) and c != "DV"]
    others = [c for c in t.columns if c not in (*NONMEM_COLUMNS, *DOSE_ITEMS)]
    dose, obs, other = (t["EVID"] == e for e in (1, 0, 2))
    reset = t["EVID"].isin((3, 4))
    cmt = t["CMT"]
    return [
        *_flag(
            t,
            ~np.isfinite(t[known].to_numpy(float)).all(axis=1),
            "values must be finite (DV may be missing)",
        ),
        *_flag(
            t,
            np.isinf(t[others].to_numpy(float)).any(axis=1),
            "values of other columns must be finite or missing",
        ),
        *_flag(t, reset, "EVID 3 and 4 (reset events) are not supported"),
        *_flag(
            t,
            ~(dose | obs | other | reset),
            "EVID must be 0 (observation), 1 (dose) or 2 (other event)",
        ),
        *_flag(t, ~t["MDV"].isin((0, 1)), "MDV must be 0 or 1"),
        *_flag(t, dose & (t["MDV"] != 1), "MDV must be 1 on dose rows (EVID = 1)"),
        *_flag(t, other & (t["MDV"] != 1), "MDV must be 1 on other-event rows (EVID = 2)"),
        *_flag(t, dose & ~(t["AMT"] > 0), "AMT must be > 0 mg on dose rows"),
        *_flag(t, obs & (t["AMT"] != 0), "AMT must be 0 on observation rows"),
        *_flag(t, other & (t["AMT"] != 0), "AMT must be 0 on other-event rows (EVID = 2)"),
        *_flag(t, obs & (t["MDV"] == 0) & ~np.isfinite(t["DV"]), "DV must be finite where MDV = 0"),
        *_flag(t, np.isinf(t["DV"]), "DV must not be infinite"),
        *_flag(t, ~((cmt >= 1) & (cmt == np.round(cmt))), "CMT must be a positive integer"),
        *_flag(t, t["TIME"] < 0, "TIME must be >= 0 h"),
    ]


def _blocks(t: pd.DataFrame) -> pd.Series:
    """Numbers the runs of equal IDs (NONMEM's individuals) from 1."""
    return (t["ID"] != t["ID"].shift()).cumsum()


def _returning_ids(t: pd.DataFrame, limit: int = 5) -> list[str]:
    """The records where an ID comes back after another ID, with where it was first."""
    ids = t["ID"]
    back = np.flatnonzero((ids != ids.shift()) & ids.duplicated())
    if back.size == 0:
        return []
    first = ids.drop_duplicates()
    first = dict(zip(first.to_numpy(), first.index, strict=True))
    shown = [f"ID {ids[i]} (record {i + 1}; first at record {first[ids[i]] + 1})" for i in back]
    more = f" and {back.size - limit} more" if back.size > limit else ""
    message = (
        "an ID comes back after another ID (NONMEM would read a new individual: "
        "sort the table by ID or give it an ID of its own)"
    )
    return [f"{message}: {', '.join(shown[:limit])}{more}"]


def _subject_problems(t: pd.DataFrame, replicates: bool) -> list[str]:
    """The conventions of each ID's records: together, sorted, not repeated, observed."""
    dose, obs = t["EVID"] == 1, t["EVID"] == 0
    unsorted = t.groupby(_blocks(t), sort=False)["TIME"].diff() < 0
    repeated = t.duplicated(["ID", "TIME", "EVID", "CMT"], keep="first")
    observed = t.loc[obs & (t["MDV"] == 0), "ID"].unique()
    return [
        *_returning_ids(t),
        *_flag(t, unsorted, "TIME must be sorted within each ID"),
        *_flag(t, repeated & (dose | (not replicates)), "duplicated records"),
        *_flag(t, ~t["ID"].isin(observed) & ~obs, "IDs without any observation (doses only)"),
    ]


def _covariate_problems(t: pd.DataFrame) -> list[str]:
    """WT, AGE and SEX where present: their ranges, constant within an ID."""
    limits = {
        "WT": (lambda v: ~(v > 0), "WT must be > 0 kg"),
        "AGE": (lambda v: ~(v > 0), "AGE must be > 0 years"),
        "SEX": (lambda v: ~v.isin((0, 1)), "SEX must be 0 (male) or 1 (female)"),
    }
    problems = []
    for name in (c for c in COVARIATE_NAMES if c in t.columns):
        bad, message = limits[name]
        problems += _flag(t, bad(t[name]), message)
    for name in (c for c in COVARIATE_NAMES if c in t.columns):
        first = t.groupby("ID", sort=False)[name].transform("first")
        problems += _flag(t, t[name] != first, f"{name} must be constant within an ID")
    return problems


def _dose_item_problems(t: pd.DataFrame) -> list[str]:
    """ADDL, II, SS and RATE where present (a column that is absent counts as 0)."""
    zero = pd.Series(0.0, index=t.index)
    addl, ii, ss, rate = (t[c] if c in t.columns else zero for c in DOSE_ITEMS)
    dose = t["EVID"] == 1
    return [
        *_flag(t, rate != 0, "infusions (RATE) are not supported"),
        *_flag(t, ss != 0, "steady-state doses (SS) are not supported"),
        *_flag(t, ~((addl >= 0) & (addl == np.round(addl))), "ADDL must be a whole number >= 0"),
        *_flag(t, ii < 0, "II must be >= 0 h"),
        *_flag(
            t, ~dose & ((addl != 0) | (ii != 0)), "ADDL and II must be 0 on rows that are not doses"
        ),
        *_flag(
            t, dose & ((addl > 0) != (ii > 0)), "ADDL > 0 needs II > 0 h, and II > 0 needs ADDL > 0"
        ),
    ]


def expand_additional_doses(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each ADDL/II dose as a dose record of its own.

    A dose record with ``ADDL = n`` and ``II = tau`` (h) gives ``n`` more records like it
    (every column copied) at ``TIME + k * tau`` h, k = 1..n; each goes after the ID's
    records at or before its time (so samples at a dose time stay pre-dose troughs, as
    NONMEM reads them). The ADDL and II columns are removed; a table without them is
    returned as it is.

    Parameters
    ----------
    table : pandas.DataFrame
        A NONMEM table (checked first, see :func:`check_nonmem`; replicate observation
        records are accepted).

    Returns
    -------
    pandas.DataFrame
        The expanded table, index 0..n-1.

    Raises
    ------
    ValueError
        From :func:`check_nonmem`, or where an implied dose falls on another dose of the
        same ID and CMT at the same time (doses are never repeated), naming the record.

    Examples
    --------
    >>> t = pd.DataFrame(
    ...     {"ID": 1, "TIME": [0.0, 13.0], "AMT": [100.0, 0.0], "EVID": [1, 0], "MDV": [1, 0],
    ...      "CMT": [1, 2], "DV": [np.nan, 2.5], "ADDL": [2, 0], "II": [12.0, 0.0]}
    ... )
    >>> expand_additional_doses(t)[["TIME", "AMT", "EVID"]]
       TIME    AMT  EVID
    0   0.0  100.0     1
    1  12.0  100.0     1
    2  13.0    0.0     0
    3  24.0  100.0     1
    """
    check_nonmem(table, replicates=True)
    return _expand(table.reset_index(drop=True))


def _expand(t: pd.DataFrame) -> pd.DataFrame:
    """:func:`expand_additional_doses` of a checked table with index 0..n-1."""
    present = [c for c in ("ADDL", "II") if c in t.columns]
    if not present:
        return t
    zero = pd.Series(0.0, index=t.index)
    addl = (t["ADDL"] if "ADDL" in t.columns else zero).to_numpy().astype(np.int64)
    ii = (t["II"] if "II" in t.columns else zero).to_numpy(float)
    base = t.drop(columns=present)
    source = np.repeat(np.arange(len(t)), addl)
    k = np.arange(source.size) - np.repeat(np.cumsum(addl) - addl, addl) + 1
    implied = base.iloc[source].reset_index(drop=True)
    implied["TIME"] = base["TIME"].to_numpy(float)[source] + k * ii[source]
    _check_implied_doses(base, implied, source)
    both = pd.concat([base, implied], ignore_index=True)
    block = _blocks(t).to_numpy()
    order = np.lexsort(
        (
            np.arange(len(both)),
            np.r_[np.zeros(len(base)), np.ones(source.size)],
            both["TIME"].to_numpy(float),
            np.r_[block, block[source]],
        )
    )
    return both.iloc[order].reset_index(drop=True)


def _check_implied_doses(base: pd.DataFrame, implied: pd.DataFrame, source) -> None:
    """Refuse an implied dose at the time of another dose of its ID into its CMT."""
    doses = pd.concat([base[base["EVID"] == 1], implied], ignore_index=True)
    clash = doses.duplicated(["ID", "TIME", "CMT"], keep=False).to_numpy()
    clash = clash[len(doses) - len(implied) :]
    if clash.any():
        shown = [
            f"ID {implied['ID'].iloc[i]} (record {source[i] + 1}) at {implied['TIME'].iloc[i]:g} h"
            for i in np.flatnonzero(clash)[:5]
        ]
        raise ValueError(
            "NONMEM table: a dose implied by ADDL/II falls on another dose into the same CMT "
            f"(doses are never repeated): {', '.join(shown)}"
        )


def observations_from_nonmem(
    table: pd.DataFrame, cmt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pivot the observations of compartment ``cmt`` to arrays.

    Every ID in the table must be sampled in ``cmt`` at the same times (an ID without
    such samples is an error, not silently dropped). For any times and doses per subject,
    see :func:`observations`.

    Parameters
    ----------
    table : pandas.DataFrame
        A NONMEM table (checked, see :func:`check_nonmem`; no replicate records).
    cmt : int
        The compartment whose observations (EVID 0, MDV 0) to take.

    Returns
    -------
    ids : numpy.ndarray
        The IDs, sorted, (N,).
    times_h : numpy.ndarray
        The shared sampling times (h), sorted, (T,).
    dv : numpy.ndarray
        The observations, (N, T).

    Raises
    ------
    ValueError
        From :func:`check_nonmem`; no observations in ``cmt``, an ID without one, or IDs
        not all sampled at the same times.
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


def observations(
    table: pd.DataFrame,
    dv_cmt: int | Sequence[int] | None = None,
    covariates: Sequence[str] = (),
    replicates: bool = False,
    dvid: Sequence[int] | None = None,
) -> Observations:
    """The observations of a NONMEM table, with each subject's doses: one endpoint, or
    several observed quantities fitted together (tagged by CMT or by DVID).

    Any number of doses and any sampling times per subject: each subject's observed DVs
    (EVID 0, MDV 0) fill a row, padded to the longest.

    Parameters
    ----------
    table : pandas.DataFrame
        A NONMEM table (checked, see :func:`check_nonmem`); ADDL/II doses are expanded
        (:func:`expand_additional_doses`).
    dv_cmt : int or sequence of int, optional
        The compartment whose observations to take (e.g. ``CMT_CENTRAL``, mg/L). None
        takes every observation; they must then all be in one compartment (unless
        ``dvid`` tells them apart). A sequence, e.g. ``(CMT_CENTRAL, CMT_RESPONSE)``,
        takes the observations of each of these compartments as one output of a model
        of several outputs: ``output`` is each observation's position in the sequence.
    covariates : sequence of str
        Columns to take, one value per subject; each must be constant within a subject
        and never missing.
    replicates : bool
        Accept repeated observation records (replicate assays), see :func:`check_nonmem`.
    dvid : sequence of int, optional
        Tell the outputs apart by the table's ``DVID`` column instead: the observations
        whose DVID is in ``dvid`` (and in ``dv_cmt``, if that is one compartment), each
        of output its DVID's position in ``dvid``.

    Returns
    -------
    Observations
        Subjects sorted by ID (``ids``, (N,)). ``dv`` (N, K): each subject's DVs in
        record order, then NaN; ``times_h`` (N, K): their times, h, padded with the
        subject's last observation time. ``output`` (N, K) int: each observation's
        output where ``dv_cmt`` is a sequence or ``dvid`` is given (0 in the padding),
        else None. ``covariates``: the named columns, (N,) each.
        ``extra["doses"]``: a dict of each subject's doses (EVID 1 records, in time
        order), D the most doses of any subject: ``"times_h"`` (N, D), h, padded with the
        subject's last dose time (0 for a subject without doses); ``"amounts_mg"``
        (N, D), AMT in mg, padded with 0 (padding adds no drug); ``"cmt"`` (N, D) int,
        padded with 0; ``"count"`` (N,) int, the number of doses.

    Raises
    ------
    ValueError
        From :func:`check_nonmem`; where a subject has no observation (in ``dv_cmt``),
        observations are in several compartments and ``dv_cmt`` is None, an output has
        no observation, ``dvid`` is given without a DVID column or with ``dv_cmt`` a
        sequence, or a covariate is not a column, is missing or varies within a subject
        (naming subject, column and records).

    Examples
    --------
    >>> import io
    >>> text = '''ID,TIME,AMT,EVID,MDV,CMT,DV,WT,ADDL,II
    ... 1,0,100,1,1,1,.,70,1,12
    ... 1,1,0,0,0,2,3.1,70,0,0
    ... 1,4.5,0,0,0,2,2.2,70,0,0
    ... 1,13,0,0,0,2,3.5,70,0,0
    ... 2,0,50,1,1,1,.,82,0,0
    ... 2,2.5,0,0,0,2,1.9,82,0,0
    ... '''
    >>> obs = observations(read_nonmem_csv(io.StringIO(text)), CMT_CENTRAL, ["WT"])
    >>> obs.ids.tolist(), obs.times_h.tolist()
    ([1, 2], [[1.0, 4.5, 13.0], [2.5, 2.5, 2.5]])
    >>> obs.dv.tolist()
    [[3.1, 2.2, 3.5], [1.9, nan, nan]]
    >>> obs.covariates["WT"].tolist()
    [70.0, 82.0]
    >>> doses = obs.extra["doses"]
    >>> doses["times_h"].tolist(), doses["amounts_mg"].tolist(), doses["count"].tolist()
    ([[0.0, 12.0], [0.0, 0.0]], [[100.0, 100.0], [50.0, 0.0]], [2, 1])

    Concentrations (CMT 2) and a response (CMT 6) as two outputs:

    >>> text = '''ID,TIME,AMT,EVID,MDV,CMT,DV
    ... 1,0,100,1,1,1,.
    ... 1,1,0,0,0,2,3.1
    ... 1,1,0,0,0,6,88
    ... 1,4,0,0,0,2,2.2
    ... '''
    >>> both = observations(read_nonmem_csv(io.StringIO(text)), dv_cmt=(CMT_CENTRAL, 6))
    >>> both.dv.tolist(), both.output.tolist()
    ([[3.1, 88.0, 2.2]], [[0, 1, 0]])
    """
    check_nonmem(table, replicates=replicates)
    t = table.reset_index(drop=True)
    ids = np.unique(t["ID"].to_numpy())
    taken = {name: _subject_values(t, name, ids) for name in covariates}
    t = _expand(t)
    obs, output = _observed_outputs(t, dv_cmt, dvid, ids)
    doses = t[t["EVID"] == 1]
    return Observations(
        ids,
        _padded(obs, ids, "TIME", fill=None),
        _padded(obs, ids, "DV", fill=np.nan),
        output=output,
        covariates=taken,
        extra={
            "doses": {
                "times_h": _padded(doses, ids, "TIME", fill=None),
                "amounts_mg": _padded(doses, ids, "AMT", fill=0.0),
                "cmt": _padded(doses, ids, "CMT", fill=0).astype(np.int64),
                "count": doses.groupby("ID").size().reindex(ids, fill_value=0).to_numpy(),
            }
        },
    )


def _observed_outputs(
    t: pd.DataFrame, dv_cmt, dvid: Sequence[int] | None, ids: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The observed records of :func:`observations` and, for several outputs (``dv_cmt``
    a sequence, or ``dvid`` given), each one's output (N, K) (0 in the padding)."""
    several_cmts = dv_cmt is not None and not isinstance(dv_cmt, int | np.integer)
    if dvid is None and not several_cmts:
        return _observed(t, dv_cmt, ids), None
    if dvid is not None:
        if several_cmts:
            raise ValueError("give the outputs by dv_cmt=(...) or by dvid=(...), not both")
        if "DVID" not in t.columns:
            raise ValueError(
                f"dvid given but the table has no DVID column; found {list(t.columns)}"
            )
        column, codes, what = "DVID", [float(d) for d in dvid], "DVID"
        t = t if dv_cmt is None else t[(t["EVID"] != 0) | (t["CMT"] == dv_cmt)]
    else:
        column, codes, what = "CMT", [int(c) for c in dv_cmt], "CMT"
    if not codes or len(set(codes)) < len(codes):
        raise ValueError(f"give each {what} of the outputs once, got {list(codes)}")
    obs = t[(t["EVID"] == 0) & (t["MDV"] == 0) & t[column].isin(codes)]
    absent = np.setdiff1d(ids, obs["ID"].to_numpy())
    if absent.size:
        raise ValueError(f"IDs {absent[:10].tolist()} have no observation with {what} in {codes}")
    unseen = [c for c in codes if not (obs[column] == c).any()]
    if unseen:
        raise ValueError(f"no observations with {what} {unseen[0]:g} (an output of {codes})")
    obs = obs.assign(_output=obs[column].map({c: k for k, c in enumerate(codes)}))
    return obs, _padded(obs, ids, "_output", fill=0.0).astype(np.int64)


def _observed(t: pd.DataFrame, dv_cmt: int | None, ids: np.ndarray) -> pd.DataFrame:
    """The observed records (EVID 0, MDV 0) of ``dv_cmt``; every ID must have one."""
    obs = t[(t["EVID"] == 0) & (t["MDV"] == 0)]
    if dv_cmt is None:
        cmts = sorted(obs["CMT"].unique().tolist())
        if len(cmts) > 1:
            raise ValueError(f"observations are in CMT {cmts}: pass dv_cmt to take one")
    else:
        obs = obs[obs["CMT"] == dv_cmt]
    where = "" if dv_cmt is None else f" with CMT == {dv_cmt}"
    if obs.empty:
        raise ValueError(f"no observations{where}")
    absent = np.setdiff1d(ids, obs["ID"].to_numpy())
    if absent.size:
        raise ValueError(f"IDs {absent[:10].tolist()} have no observation{where}")
    return obs


def _subject_values(t: pd.DataFrame, name: str, ids: np.ndarray) -> np.ndarray:
    """Column ``name`` once per subject (in the order of ``ids``); refused where it is
    missing or varies within a subject, naming the subject, column and records."""
    if name not in t.columns:
        raise ValueError(f"no column {name!r} to take as a covariate; found {list(t.columns)}")
    values = t[name]
    missing = np.flatnonzero(values.isna())
    if missing.size:
        i = missing[0]
        raise ValueError(
            f"covariate {name} is missing for subject ID {t['ID'][i]} (record {i + 1})"
        )
    first = values.groupby(t["ID"]).transform("first")
    varies = np.flatnonzero(values != first)
    if varies.size:
        i = varies[0]
        j = int(np.flatnonzero(t["ID"] == t["ID"][i])[0])
        raise ValueError(
            f"covariate {name} varies within subject ID {t['ID'][i]}: {values[j]:g} at "
            f"record {j + 1}, {values[i]:g} at record {i + 1}"
        )
    return values.groupby(t["ID"]).first().reindex(ids).to_numpy(float)


def _padded(rows: pd.DataFrame, ids: np.ndarray, column: str, fill) -> np.ndarray:
    """``rows[column]`` as an (N, K) float array, a row per subject of ``ids`` in record
    order, K the most rows of a subject; then ``fill``, or where ``fill`` is None the
    subject's last value (0 for a subject without rows)."""
    subject = np.searchsorted(ids, rows["ID"].to_numpy())
    position = rows.groupby("ID", sort=False).cumcount().to_numpy()
    width = int(position.max()) + 1 if len(rows) else 0
    if fill is None:
        fill = rows.groupby("ID")[column].last().reindex(ids, fill_value=0).to_numpy(float)
    out = np.empty((ids.size, width))
    out[:] = np.reshape(fill, (-1, 1)) if np.ndim(fill) else fill
    out[subject, position] = rows[column].to_numpy(float)
    return out
