"""The warfarin PK/PD data (O'Reilly; nlmixr2data) and its standard population model.

The file ``data/warfarin/warfarin.csv`` (32 subjects, one oral dose each; provenance and
licence in ``data/warfarin/README.md``) is converted to the NONMEM layout of
:mod:`pkpd_lib.pmx.nonmem` and read by its strict reader. Its columns map as: ``id`` -> ID,
``time`` (h) -> TIME, ``amt`` (mg) -> AMT, ``evid`` -> EVID, ``dvid`` -> CMT (dose
records 1, ``cp`` 2: warfarin concentration in mg/L, ``pca`` 6: prothrombin complex
activity in % of normal), ``dv`` -> DV, ``wt`` (kg), ``age`` (years), ``sex``
(``male`` 0, ``female`` 1). Subject 9 has two assays of the samples at 3, 6, 9 and 12 h;
both are kept, as NONMEM would read them.

The model is the one of the nlmixr2 "multiple endpoints" example: the dose passes a
transit step and an absorption step, both at rate ``ka`` (1/h), into one compartment
(``CL`` L/h, ``V`` L; :func:`pkpd_lib.pmx.pk.transit_absorption`); PCA is an
indirect-response (turnover) model whose production is inhibited,
``dR/dt = kout * E0 * (1 - Emax * C / (EC50 + C)) - kout * R``,
``R(0) = E0`` (% of normal), ``kout`` 1/h, ``EC50`` mg/L, ``Emax`` a fraction.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from . import nonmem
from .nlme import NLMEFit, NLMEModel, Observations, grid_positions, values_at
from .pk import chain_absorption, superpose

# transit_conc: the name _pk_predict calls; a fit's store key holds the predict function's
# bytecode and names (pkpd_lib.pmx.nlme), so renaming it would orphan the stored fits
from .pk import transit_absorption as transit_conc

#: The data file and its provenance note, in the repository.
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "warfarin"
DATA_PATH = DATA_DIR / "warfarin.csv"
RAW_COLUMNS = ("id", "time", "amt", "dv", "dvid", "evid", "wt", "age", "sex")
CMT_OF_DVID = {"cp": nonmem.CMT_CENTRAL, "pca": nonmem.CMT_RESPONSE}
SEX_CODES = {"male": 0, "female": 1}

#: nlmixr's estimates for these data under the model ``pk.turnover.emax3`` (nlmixr2's
#: "multiple endpoints" example, :data:`JOINT_MODEL`'s structure), as the R package
#: posologyr records them in a test fixture: ``tests/testthat/test_multi_outputs.R``
#: ("## estimates from nlmixr", an ``ini`` block; github.com/levenc/posologyr, commit
#: 093162118a9b). The fixture gives them on the estimation scale (``tktr 0.106``,
#: ``tka -0.087``, ``tcl -2.03``, ``tv 2.07``, ``temax 3.4`` logit, ``tec50 0.00724``,
#: ``tkout -2.9``, ``te0 4.57``; three significant digits, so the natural values below
#: carry about 0.5%); its last lines call nlmixr's ``"focei"`` with no outer iteration
#: (individual estimates at these values), but it does not say which method estimated
#: them. The sequential models :data:`PK_MODEL` and :data:`PD_MODEL` share six of them.
REFERENCE_ESTIMATION_SCALE = {
    "ktr": 0.106,
    "ka": -0.087,
    "CL": -2.03,
    "V": 2.07,
    "Emax": 3.4,
    "EC50": 0.00724,
    "kout": -2.9,
    "E0": 4.57,
}
#: :data:`REFERENCE_ESTIMATION_SCALE` on the natural scale (:data:`UNITS`): ktr 1.112
#: 1/h, ka 0.917 1/h, CL 0.131 L/h, V 7.92 L, Emax 0.968, EC50 1.007 mg/L, kout 0.055
#: 1/h, E0 96.5 %.
REFERENCE = {
    name: float(1.0 / (1.0 + np.exp(-value)) if name == "Emax" else np.exp(value))
    for name, value in REFERENCE_ESTIMATION_SCALE.items()
}
#: The fixture's residual error SDs, named as :data:`JOINT_MODEL`'s fits name them:
#: ``pkadd.err 0.144`` (mg/L), ``prop.err 0.15``, ``pdadd.err 3.91`` (% of normal).
REFERENCE_SIGMA = {"sigma_conc_add": 0.144, "sigma_conc_prop": 0.15, "sigma_pca_add": 3.91}
#: The fixture's between-subject variability, as it writes it (``eta.ktr ~ sqrt(1.05)``,
#: ...): the numbers under the square root. An ``ini`` block's ``eta ~ v`` sets a
#: variance, so as written the variances are their square roots; the numbers could be
#: nlmixr's variances, SDs or CVs, and the fixture does not say which (chapter 14
#: evaluates all three readings).
REFERENCE_OMEGA_RECORDED = {
    "ktr": 1.05,
    "ka": 0.906,
    "CL": 0.281,
    "V": 0.229,
    "Emax": 0.509,
    "EC50": 0.519,
    "kout": 0.127,
    "E0": 0.0708,
}


def reference_start() -> tuple[dict, dict, dict]:
    """The fixture's estimates as a starting point of :data:`JOINT_MODEL`.

    Returns
    -------
    typical : dict
        :data:`REFERENCE`, the typical values (natural scale).
    omega_sd : dict
        SDs of the random effects: the square roots of :data:`REFERENCE_OMEGA_RECORDED`,
        read as variances.
    sigma : dict
        Residual SDs per output (:data:`REFERENCE_SIGMA`).

    Examples
    --------
    >>> typical, omega_sd, sigma = reference_start()
    >>> round(typical["CL"], 3), round(omega_sd["CL"], 3), sigma["pca"]
    (0.131, 0.53, {'add': 3.91})
    """
    omega = {p: float(np.sqrt(v)) for p, v in REFERENCE_OMEGA_RECORDED.items()}
    sigma = {
        "conc": {
            "add": REFERENCE_SIGMA["sigma_conc_add"],
            "prop": REFERENCE_SIGMA["sigma_conc_prop"],
        },
        "pca": {"add": REFERENCE_SIGMA["sigma_pca_add"]},
    }
    return dict(REFERENCE), omega, sigma


#: Where :data:`REFERENCE` comes from, in words.
REFERENCE_SOURCE = (
    "nlmixr's estimates for pk.turnover.emax3 as recorded in posologyr's test fixture "
    "tests/testthat/test_multi_outputs.R (levenc/posologyr @ 0931621)"
)

#: Units of the model's parameters.
UNITS = {
    "ka": "1/h",
    "CL": "L/h",
    "V": "L",
    "E0": "% of normal",
    "Emax": "-",
    "EC50": "mg/L",
    "kout": "1/h",
}

#: The PCA model's time grid (h): exponential-integrator steps of ``PD_STEP_H``.
PD_STEP_H = 0.5


def to_nonmem_table(raw: pd.DataFrame) -> pd.DataFrame:
    """The raw nlmixr2 table in the NONMEM layout (see the module docstring). Missing
    values (a truncated file's last line) and unknown ``dvid`` or ``sex`` values are
    refused, naming them.

    Parameters
    ----------
    raw : pandas.DataFrame
        The table as read from ``warfarin.csv``, with the columns of :data:`RAW_COLUMNS`.

    Returns
    -------
    pandas.DataFrame
        Columns ID, TIME (h), AMT (mg), EVID, MDV, CMT, DV, WT (kg), AGE (years), SEX
        (0 male, 1 female); not yet checked (:func:`load` checks it).

    Raises
    ------
    ValueError
        A missing column, a missing value (DV aside on dose records), or an unknown
        ``dvid`` or ``sex`` value.
    """
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"warfarin table lacks column(s) {missing}")
    dose = raw["evid"] == 1
    blank = raw[list(RAW_COLUMNS)].isna()
    blank["dv"] &= ~dose  # a dose record needs no DV
    if blank.to_numpy().any():
        rows = np.flatnonzero(blank.any(axis=1).to_numpy())
        columns = [c for c in RAW_COLUMNS if blank[c].any()]
        raise ValueError(
            f"warfarin table has missing values in column(s) {columns} at row(s) "
            f"{rows[:5].tolist()}{' ...' if rows.size > 5 else ''} (counted from 0 after "
            "the header; a truncated file?)"
        )
    unknown_dvid = sorted(set(raw.loc[~dose, "dvid"]) - set(CMT_OF_DVID))
    if unknown_dvid:
        raise ValueError(f"unknown dvid value(s) {unknown_dvid}; expected {sorted(CMT_OF_DVID)}")
    unknown_sex = sorted(set(raw["sex"]) - set(SEX_CODES))
    if unknown_sex:
        raise ValueError(f"unknown sex value(s) {unknown_sex}; expected {sorted(SEX_CODES)}")
    cmt = raw["dvid"].map(CMT_OF_DVID).where(~dose, nonmem.CMT_DEPOT)
    return pd.DataFrame(
        {
            "ID": raw["id"],
            "TIME": raw["time"],
            "AMT": raw["amt"].where(dose, 0.0),
            "EVID": raw["evid"],
            "MDV": dose.astype(int),
            "CMT": cmt.astype(int),
            "DV": raw["dv"].where(~dose, np.nan),
            "WT": raw["wt"],
            "AGE": raw["age"],
            "SEX": raw["sex"].map(SEX_CODES),
        }
    )


def load(path: str | Path = DATA_PATH) -> pd.DataFrame:
    """The warfarin data as a checked NONMEM table (through
    :func:`pkpd_lib.pmx.nonmem.read_nonmem_csv`, replicate assays accepted).

    Parameters
    ----------
    path : str or pathlib.Path
        The raw nlmixr2 file (default :data:`DATA_PATH`).

    Returns
    -------
    pandas.DataFrame
        The table as :func:`pkpd_lib.pmx.nonmem.read_nonmem_csv` returns it.

    Raises
    ------
    ValueError
        A file that is empty or cannot be parsed (naming it), or a table that
        :func:`to_nonmem_table` or :func:`pkpd_lib.pmx.nonmem.read_nonmem_csv` refuses.
    """
    try:
        raw = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable warfarin table (empty, truncated or damaged?): {error}"
        ) from None
    table = to_nonmem_table(raw)
    text = table.to_csv(index=False, na_rep=".")
    return nonmem.read_nonmem_csv(io.StringIO(text), replicates=True)


def observations(table: pd.DataFrame, cmt: int) -> Observations:
    """One endpoint's observations of every subject, padded to a common width, with the
    subjects' doses (mg, at 0 h) and covariates.

    Parameters
    ----------
    table : pandas.DataFrame
        The NONMEM table of :func:`load`.
    cmt : int
        The endpoint's compartment: :data:`pkpd_lib.pmx.nonmem.CMT_CENTRAL` (warfarin,
        mg/L) or :data:`pkpd_lib.pmx.nonmem.CMT_RESPONSE` (PCA, % of normal).

    Returns
    -------
    Observations
        Subjects with an observation in ``cmt``, sorted by ID: ``times_h`` (h) and ``dv``
        (N, K) padded with 0 h and NaN; ``covariates`` WT, AGE and SEX (N,); ``extra``
        ``"dose_mg"`` (N,).

    Raises
    ------
    ValueError
        A subject whose doses are not exactly one, at 0 h, or who has no dose record
        (naming the subjects).
    """
    doses = table[table["EVID"] == 1].groupby("ID")
    undosed = sorted(set(table["ID"]) - set(doses.groups))
    if undosed:
        raise ValueError(
            f"each warfarin subject must have one dose, at 0 h: subject(s) {undosed} "
            "have no dose record (EVID 1)"
        )
    wrong = (doses["TIME"].max() != 0) | (doses.size() != 1)
    if wrong.any():
        raise ValueError(
            "each warfarin subject must have one dose, at 0 h: subject(s) "
            f"{wrong.index[wrong].tolist()} have another number of doses or a dose at another time"
        )
    obs = table[(table["EVID"] == 0) & (table["CMT"] == cmt) & (table["MDV"] == 0)]
    groups = dict(tuple(obs.groupby("ID")))
    ids = np.array(sorted(groups))
    width = max(len(g) for g in groups.values())
    times = np.zeros((ids.size, width))
    dv = np.full((ids.size, width), np.nan)
    for i, k in enumerate(ids):
        g = groups[k]
        times[i, : len(g)] = g["TIME"].to_numpy()
        dv[i, : len(g)] = g["DV"].to_numpy()
    first = table.groupby("ID").first().loc[ids]
    return Observations(
        ids,
        times,
        dv,
        covariates={c: first[c].to_numpy(float) for c in ("WT", "AGE", "SEX")},
        extra={"dose_mg": doses["AMT"].sum().loc[ids].to_numpy(float)},
    )


def _pk_predict(p, data: Observations) -> np.ndarray:
    dose = np.asarray(data.extra["dose_mg"], float)[:, None, None]
    return transit_conc(
        p["ka"][..., None],
        p["CL"][..., None],
        p["V"][..., None],
        dose,
        data.times_h[:, None, :],
    )


#: The PK model: transit and absorption at one rate, one compartment.
PK_MODEL = NLMEModel(
    "warfarin PK (transit and absorption at one rate, one compartment)",
    ("ka", "CL", "V"),
    dict.fromkeys(("ka", "CL", "V"), "log"),
    ("ka", "CL", "V"),
    _pk_predict,
    error=("add", "prop"),
    units=UNITS,
)


def turnover_pca(E0, Emax, EC50, kout, conc_mid, step_h: float = PD_STEP_H) -> np.ndarray:
    """PCA (% of normal) on the grid 0, step_h, 2 step_h, ... from the concentrations
    ``conc_mid`` at the middle of each step: the turnover model integrated exactly for
    the drive held at its mid-step value (second-order accurate).

    Parameters
    ----------
    E0, Emax, EC50, kout : array_like
        Baseline PCA (% of normal), maximal inhibition (a fraction), EC50 (mg/L) and
        turnover rate constant (1/h); arrays broadcast against ``conc_mid[..., 0]``.
    conc_mid : array_like
        Concentrations (mg/L) at the middle of each step, (..., G-1).
    step_h : float
        The grid's step (h), default :data:`PD_STEP_H`.

    Returns
    -------
    numpy.ndarray
        PCA (% of normal) at the G grid times, (..., G), starting at ``E0``.
    """
    E0, Emax, EC50, kout = (np.asarray(a, float) for a in (E0, Emax, EC50, kout))
    c = np.asarray(conc_mid, float)
    decay = np.exp(-kout * step_h)
    drive = E0[..., None] * (1.0 - Emax[..., None] * c / (EC50[..., None] + c))
    out = np.empty((*np.broadcast_shapes(E0.shape, c.shape[:-1]), c.shape[-1] + 1))
    r = np.broadcast_to(E0, out.shape[:-1]).astype(float)
    out[..., 0] = r
    for n in range(c.shape[-1]):
        r = r * decay + (1.0 - decay) * drive[..., n]
        out[..., n + 1] = r
    return out


def _pca_grid(times_h) -> tuple[np.ndarray, np.ndarray]:
    """The PCA grid's mid-step times (h, every :data:`PD_STEP_H` up to the last sample)
    and each sample's grid position; a time off the grid is a ``ValueError``."""
    index = grid_positions(times_h, PD_STEP_H, "PCA sampling times")
    return np.arange(PD_STEP_H / 2, np.max(times_h), PD_STEP_H), index


def pd_observations(table: pd.DataFrame, pk: NLMEFit | dict) -> Observations:
    """PCA observations with each subject's concentration on the PD grid taken from its
    individual PK parameters: the sequential (IPP) approach.

    Parameters
    ----------
    table : pandas.DataFrame
        The NONMEM table of :func:`load`.
    pk : NLMEFit or dict
        A PK fit (its ``individual`` parameters), or a mapping of ``ka`` (1/h), ``CL``
        (L/h) and ``V`` (L) arrays (N,), in the order of the subjects' IDs.

    Returns
    -------
    Observations
        The PCA observations (:func:`observations`) for :data:`PD_MODEL`, with ``extra``
        ``"conc_mid"`` (mg/L, (N, G) at the middle of each step of :data:`PD_STEP_H` up to
        the last sample) and ``"grid_index"`` (each sample's grid position, (N, K)).

    Raises
    ------
    ValueError
        PCA sampling times that are not multiples of :data:`PD_STEP_H`, or as
        :func:`observations`.
    """
    data = observations(table, nonmem.CMT_RESPONSE)
    params = pk.individual if isinstance(pk, NLMEFit) else pk
    mid, index = _pca_grid(data.times_h)
    conc = transit_conc(
        params["ka"][:, None],
        params["CL"][:, None],
        params["V"][:, None],
        data.extra["dose_mg"][:, None],
        mid[None],
    )
    return Observations(
        data.ids,
        data.times_h,
        data.dv,
        data.covariates,
        extra={**data.extra, "conc_mid": conc, "grid_index": index},
    )


def _pd_predict(p, data: Observations) -> np.ndarray:
    conc = data.extra["conc_mid"][:, None, :]
    grid = turnover_pca(p["E0"], p["Emax"], p["EC50"], p["kout"], conc)
    return values_at(grid, data.extra["grid_index"])


#: The PCA model: turnover with inhibited production.
PD_MODEL = NLMEModel(
    "warfarin PCA (turnover, inhibited production)",
    ("E0", "Emax", "EC50", "kout"),
    {"E0": "log", "Emax": "logit", "EC50": "log", "kout": "log"},
    ("E0", "EC50", "kout"),
    _pd_predict,
    error=("add",),
    units=UNITS,
)


def joint_observations(table: pd.DataFrame) -> Observations:
    """Every subject's concentrations and PCA values together, tagged by output (0
    warfarin, mg/L; 1 PCA, % of normal), for :data:`JOINT_MODEL`.

    Parameters
    ----------
    table : pandas.DataFrame
        The NONMEM table of :func:`load`.

    Returns
    -------
    Observations
        Per subject (sorted by ID) the concentrations then the PCA values (each padded
        as :func:`observations` pads them), ``output`` 0 or 1; ``covariates`` WT, AGE,
        SEX; ``extra``: ``"dose_mg"`` (N,), ``"mid_h"`` (the middle of each step of
        :data:`PD_STEP_H` up to the last PCA sample, h, (G,)) and ``"grid_index"`` (each
        PCA value's grid position, 0 for the concentrations, (N, K)).

    Raises
    ------
    ValueError
        Subjects without both endpoints, PCA times that are not multiples of
        :data:`PD_STEP_H`, or as :func:`observations`.
    """
    conc = observations(table, nonmem.CMT_CENTRAL)
    pca = observations(table, nonmem.CMT_RESPONSE)
    if not np.array_equal(conc.ids, pca.ids):
        lacking = sorted(set(conc.ids) ^ set(pca.ids))
        raise ValueError(f"subject(s) {lacking} lack one of the two endpoints")
    mid, index = _pca_grid(pca.times_h)
    width = conc.times_h.shape[1]
    return Observations(
        conc.ids,
        np.hstack([conc.times_h, pca.times_h]),
        np.hstack([conc.dv, pca.dv]),
        conc.covariates,
        extra={
            "dose_mg": conc.extra["dose_mg"],
            "mid_h": mid,
            "grid_index": np.hstack([np.zeros_like(conc.times_h, int), index]),
        },
        output=np.hstack(
            [np.zeros((conc.n_subjects, width), int), np.ones(pca.times_h.shape, int)]
        ),
    )


def _joint_predict(p, data: Observations) -> dict[str, np.ndarray]:
    q = {k: v[..., None] for k, v in p.items()}
    dose = np.asarray(data.extra["dose_mg"], float)[:, None, None]

    def conc_at(times_h):
        return chain_absorption(q["ktr"], q["ka"], q["CL"], q["V"], dose, times_h)

    grid = turnover_pca(
        p["E0"], p["Emax"], p["EC50"], p["kout"], conc_at(data.extra["mid_h"][None, None])
    )
    return {
        "conc": conc_at(data.times_h[:, None, :]),
        "pca": values_at(grid, data.extra["grid_index"]),
    }


#: nlmixr2's model ``pk.turnover.emax3``: the dose passes a transit step (``ktr``, 1/h)
#: and absorption (``ka``, 1/h) into one compartment (:func:`pkpd_lib.pmx.pk.chain_absorption`),
#: PCA follows the turnover model of :data:`PD_MODEL`, a random effect on every
#: parameter, concentrations (additive + proportional error) and PCA (additive) fitted
#: together (:func:`joint_observations`).
JOINT_MODEL = NLMEModel(
    "warfarin PK and PCA jointly (transit and absorption rates, turnover)",
    ("ktr", "ka", "CL", "V", "E0", "Emax", "EC50", "kout"),
    {
        **dict.fromkeys(("ktr", "ka", "CL", "V", "E0", "EC50", "kout"), "log"),
        "Emax": "logit",
    },
    ("ktr", "ka", "CL", "V", "E0", "Emax", "EC50", "kout"),
    _joint_predict,
    error={"conc": ("add", "prop"), "pca": ("add",)},
    units={**UNITS, "ktr": "1/h"},
)

#: Starting values: the initial estimates in the published example's ``ini`` block (not
#: its results).
PK_START = {"ka": 1.0, "CL": 0.1, "V": 10.0}
#: The same for the PCA model.
PD_START = {"E0": 100.0, "Emax": 0.8, "EC50": 0.5, "kout": 0.05}

#: Starting values of :data:`JOINT_MODEL`: the ``ini`` block of nlmixr2's
#: ``pk.turnover.emax3`` (not its results), but for ``ktr`` and ``ka``, which it starts
#: both at 1 1/h: there the model is symmetric in the two rates (so is every gradient),
#: and a gradient-based fit cannot leave the line ``ktr == ka``. They start a factor of 2
#: either side of it instead.
JOINT_START = {
    "ktr": 2.0,
    "ka": 0.5,
    "CL": 0.1,
    "V": 10.0,
    "E0": 100.0,
    "Emax": 0.8,
    "EC50": 0.5,
    "kout": 0.05,
}
#: Starting SDs of the random effects (the ``ini`` block's variances 1, 1, 2, 1 and 0.5).
JOINT_OMEGA_START = {
    "ktr": 1.0,
    "ka": 1.0,
    "CL": float(np.sqrt(2.0)),
    "V": 1.0,
    **dict.fromkeys(("E0", "Emax", "EC50", "kout"), float(np.sqrt(0.5))),
}
#: Starting residual SDs (the ``ini`` block's): mg/L and a fraction for the
#: concentrations, % of normal for PCA.
JOINT_SIGMA_START = {"conc": {"add": 0.1, "prop": 0.1}, "pca": {"add": 10.0}}


#: The hourly grid (h) on which the networks read concentrations and predict PCA.
HOURLY_H = np.arange(0.0, 145.0)
#: PCA is a percentage of normal activity: its baseline, by the scale's definition.
PCA_NORMAL = 100.0


def conc_after_doses(pk: dict, dose_times_h, amounts_mg, times_h) -> np.ndarray:
    """Concentrations (N, T) in mg/L of subjects with individual ``pk`` parameters after
    doses, by superposition of :func:`pkpd_lib.pmx.pk.transit_absorption`.

    A dose at a sampling time counts at it (it adds nothing there: the transit input
    starts at 0), and the doses are added one after another
    (:func:`pkpd_lib.pmx.pk.superpose` with ``sample_at_dose="after"``,
    ``order="sequential"``, as this chapter's results were computed).

    Parameters
    ----------
    pk : dict
        ``ka`` (1/h), ``CL`` (L/h) and ``V`` (L), arrays (N,).
    dose_times_h, amounts_mg : array_like
        Dose times (h) and amounts (mg), each (N, D) or (D,); finite, amounts >= 0 (0
        adds nothing).
    times_h : array_like
        Sampling times (h), (T,).

    Returns
    -------
    numpy.ndarray
        Concentrations (mg/L), (N, T).

    Raises
    ------
    ValueError
        Dose times or amounts that are not finite, or a negative amount.
    """
    n = np.asarray(pk["CL"]).size
    dt = np.atleast_2d(np.asarray(dose_times_h, float))
    dt = np.broadcast_to(dt, (n, dt.shape[-1]))
    amt = np.broadcast_to(np.asarray(amounts_mg, float), dt.shape)
    if np.any(amt < 0) or not np.isfinite(amt).all() or not np.isfinite(dt).all():
        raise ValueError("dose times and amounts must be finite, amounts >= 0 mg")
    return superpose(
        transit_conc,
        dt,
        amt,
        np.asarray(times_h, float),
        sample_at_dose="after",
        order="sequential",
        ka=pk["ka"],
        cl=pk["CL"],
        v=pk["V"],
    )


def network_data(table: pd.DataFrame, pk: dict, dose_times_h=None, amounts_mg=None):
    """Inputs and targets of the book's sequence networks for the warfarin subjects.

    Parameters
    ----------
    table : pandas.DataFrame
        The NONMEM table of :func:`load`.
    pk : dict
        Each subject's individual ``ka`` (1/h), ``CL`` (L/h) and ``V`` (L), arrays (N,),
        in the order of the subjects' IDs.
    dose_times_h, amounts_mg : array_like, optional
        Doses to give instead of each subject's one dose (see :func:`conc_after_doses`);
        None: the subjects' own doses, at 0 h.

    Returns
    -------
    x : dict of str to numpy.ndarray
        ``conc`` (N, 145) hourly (0 to 144 h, :data:`HOURLY_H`) in mg/L from each
        subject's individual PK, ``BASE_PD`` = 100% of normal (N,), WT, AGE, SEX (N,);
        float32.
    y : numpy.ndarray
        Targets (N, 145): observed PCA (% of normal) at its sampling hours, NaN elsewhere
        (sampling times must be whole hours from 0 to 144 h, as they are in these data).

    Raises
    ------
    ValueError
        If a PCA sampling time is not a whole hour of :data:`HOURLY_H` (0 to 144 h),
        naming the subject and the time; or from :func:`observations`.
    """
    obs = observations(table, nonmem.CMT_RESPONSE)
    if dose_times_h is None:
        dose_times_h, amounts_mg = np.zeros((obs.n_subjects, 1)), obs.extra["dose_mg"][:, None]
    conc = conc_after_doses(pk, dose_times_h, amounts_mg, HOURLY_H)
    x = {
        "conc": conc.astype("float32"),
        "BASE_PD": np.full(obs.n_subjects, PCA_NORMAL, "float32"),
        **{c: obs.covariates[c].astype("float32") for c in ("WT", "AGE", "SEX")},
    }
    y = np.full((obs.n_subjects, HOURLY_H.size), np.nan)
    rows, cols = np.nonzero(~np.isnan(obs.dv))
    times = obs.times_h[rows, cols]
    off = (times != np.round(times)) | (times < HOURLY_H[0]) | (times > HOURLY_H[-1])
    if off.any():
        i = np.flatnonzero(off)[0]
        raise ValueError(
            f"subject {obs.ids[rows[i]]} has a PCA sample at {times[i]:g} h: the networks' "
            f"grid is the whole hours {HOURLY_H[0]:g} to {HOURLY_H[-1]:g} h (HOURLY_H)"
        )
    y[rows, times.astype(int)] = obs.dv[rows, cols]
    return x, y
