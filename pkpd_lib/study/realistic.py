"""The study under realistic information: what a modeller would actually know.

The book's first chapters give the network three things no study has: each patient's
noise-free baseline, a response with no variability the inputs do not explain, and the
patient's measured concentrations *under the new regimen*. An :class:`Information`
setting says which of these the modeller has; :func:`locked_study` builds the data for
it, with a test population first drawn as a locked test set and, since the methods were
designed while seeing its scores, named the development set by the book's protocol; and
a validation regimen that is none of QD, BID and TID, on which every choice is made.
:func:`switch_study` builds the protocol's scenario S48 (QD, then the regimen asked
about from 48 h), :func:`calibration_case` its conformal calibration patients, and
:func:`fitted_typical_curve` the population-typical reference from the FOCE-I fits.

``conc="predicted"`` is the prospective use: each patient's PK is fitted (empirical
Bayes, :func:`pkpd_lib.pmx.pkfit.fit_individual_pk`) to seven concentrations measured under
QD, and the network reads the concentration that fit predicts for the regimen asked
about. The fit's prior is set by ``Information.pk_prior``: ``"true"``, the population PK
model with its generating typical values and variances (an oracle), or ``"estimated"``,
the population PK model a modeller estimates from the training patients' sparse QD
concentrations by FOCE-I (:func:`population_pk_fit`), each patient's PK then being the
empirical Bayes estimate under it (:func:`individual_pk`): nothing generating is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..nets import networks as nw
from ..nets.features import EARLY_PD_FEATURES, Source, baseline_pd, build_inputs
from ..pmx import nlme, pkfit, sampling
from ..pmx import popmodels as pm
from ..pmx import regimens as reg
from ..pmx.model import simulate
from ..pmx.population import individual_params, sample_population
from . import datasets
from .experiments import CHOSEN

#: Unexplained between-patient PD variability of the realistic setting (SD of eta).
PD_VARIABILITY = {"EC50": 0.3, "kout": 0.2}
#: The locked test population: (population seed, observation seed), first ID, size.
LOCKED_TEST_SEEDS = (404, 1404)
LOCKED_FIRST_ID = 40001
LOCKED_SIZE = 200
#: Observation seed of the validation patients under other regimens (their QD data are
#: the book's validation set).
STUDY_VAL_OBS_SEED = sampling.STUDY_SEEDS["val"][1] + 5000
#: The validation regimen: 75 mg every 18 h (100 mg a day on average).
VALIDATION_REGIMEN = reg.every(18.0, 75.0, name="q18h")


@dataclass(frozen=True)
class Information:
    """What the modeller knows. ``baseline``: ``"true"`` (each patient's R0, an oracle),
    ``"observed"`` (one pre-dose measurement, 3% error) or ``"screening"`` (mean of three
    pre-dose measurements). ``pd_variability``: whether EC50 and kout vary between
    patients beyond what covariates explain (:data:`PD_VARIABILITY`). ``conc``:
    ``"observed"`` (hourly concentrations measured under the regimen predicted, an oracle
    for a regimen not yet given) or ``"predicted"`` (from a PK fit to seven QD samples).
    ``pk_prior`` (with ``conc="predicted"``): ``"true"`` (the generating population PK
    model as the individual fits' prior, an oracle) or ``"estimated"`` (the FOCE-I fit
    of :func:`population_pk_fit` to the training patients). ``early_pd``: whether the
    network also reads the patient's observed PD under QD at
    :data:`pkpd_lib.nets.features.EARLY_PD_TIMES_H` (days 1-2), as a study that started every
    patient on QD would have. Baselines and early PD always come from the patient's QD
    data, so the network and its regimen-blind reference read the same values.

    Examples
    --------
    >>> Information("screening", True, "predicted", early_pd=True).label
    'baseline screening, PD variability, conc predicted, early QD PD'
    >>> Information(baseline="median")
    Traceback (most recent call last):
    ...
    ValueError: baseline must be 'true', 'observed' or 'screening', got 'median'
    """

    baseline: str = "true"
    pd_variability: bool = False
    conc: str = "observed"
    early_pd: bool = False
    pk_prior: str = "true"

    def __post_init__(self) -> None:
        if self.baseline not in ("true", "observed", "screening"):
            raise ValueError(
                f"baseline must be 'true', 'observed' or 'screening', got {self.baseline!r}"
            )
        if self.conc not in ("observed", "predicted"):
            raise ValueError(f"conc must be 'observed' or 'predicted', got {self.conc!r}")
        if self.pk_prior not in ("true", "estimated"):
            raise ValueError(f"pk_prior must be 'true' or 'estimated', got {self.pk_prior!r}")
        if self.pk_prior == "estimated" and self.conc != "predicted":
            raise ValueError("pk_prior='estimated' needs conc='predicted' (no PK is fitted else)")

    @property
    def label(self) -> str:
        return (
            f"baseline {self.baseline}, "
            f"{'PD variability' if self.pd_variability else 'no PD variability'}, "
            f"conc {self.conc}"
            + (", PK prior estimated" if self.pk_prior == "estimated" else "")
            + (", early QD PD" if self.early_pd else "")
        )

    @property
    def extra_eta_sd(self) -> dict[str, float] | None:
        """The unexplained PD variability of the setting's patients
        (:data:`PD_VARIABILITY`), or None."""
        return PD_VARIABILITY if self.pd_variability else None

    @property
    def config(self) -> nw.NetworkConfig:
        """The book's dense network (``study.CHOSEN["dense"]``), reading the early-PD
        inputs too when the setting has them."""
        base = CHOSEN["dense"]
        if not self.early_pd:
            return base
        return replace(base, static_features=(*base.static_features, *EARLY_PD_FEATURES))


#: The book's original setting: every oracle.
ORACLE = Information()
#: The realistic setting: none of the oracles (the PK prior estimated from training data).
REALISTIC = Information(
    baseline="screening", pd_variability=True, conc="predicted", pk_prior="estimated"
)


@dataclass
class LockedData:
    """Network inputs and truths of one :class:`Information` setting.

    ``train_x``/``train_y``, ``val_x``/``val_y``: the QD training and validation
    patients (observed PD as targets). ``cases``: for each named regimen, the inputs of
    the patients predicted (``"validation"`` patients under the validation regimen and
    adherence deviations; the locked ``"test"`` patients under everything), with the
    noise-free truth and each patient's baseline input. ``qd_x``: the same patients'
    inputs under QD, which the regimen-blind network reference reads.
    """

    info: Information
    train_x: dict
    train_y: np.ndarray
    val_x: dict
    val_y: np.ndarray
    cases: dict[tuple[str, str], tuple[dict, np.ndarray]]
    qd_x: dict[str, dict]
    populations: dict


def _inputs(
    info: Information, data: datasets.Dataset, fit: pkfit.PKFit | dict | None, qd: datasets.Dataset
) -> dict:
    """Network inputs for ``data`` (any regimen) of patients whose QD data are ``qd``."""
    x = datasets.network_inputs(data, baseline="true")
    x["BASE_PD"] = baseline_pd(qd, info.baseline).astype("float32")
    if info.early_pd:
        x.update(build_inputs(Source(qd, qd.times_h, qd.conc_obs), EARLY_PD_FEATURES))
    if info.conc == "predicted":
        if isinstance(fit, pkfit.PKFit):
            conc = pkfit.reconstructed_conc(fit, data.regimens, data.times_h)
        else:  # individual parameters under the estimated population model
            conc = pm.individual_conc(fit, data.regimens, data.times_h)
        x["conc"] = conc.astype("float32")
    return x


def _qd_fit(
    info: Information,
    qd: datasets.Dataset,
    population: nlme.NLMEFit | None = None,
    times_h=sampling.SPARSE_TIMES_H,
) -> pkfit.PKFit | dict | None:
    """The empirical Bayes PK of each patient from its QD concentrations at ``times_h``
    (default the study's seven sparse times): under the generating model (a
    :class:`PKFit`) or under the estimated ``population`` fit (individual parameters),
    or None when concentrations are observed."""
    if info.conc == "observed":
        return None
    if info.pk_prior == "estimated":
        return individual_pk(population, qd, times_h)
    sparse = qd.at_times(times_h)
    return pkfit.fit_individual_pk(
        sparse.conc_obs, sparse.times_h, sparse.regimens, qd.population.covariates
    )


#: Training patients the population PK model is estimated from (the first ones).
POPULATION_PK_PATIENTS = 100


def sparse_pk_observations(
    qd: datasets.Dataset, n_patients: int | None = None, times_h=sampling.SPARSE_TIMES_H
):
    """The first ``n_patients`` (default all) patients' QD concentrations at ``times_h``
    (default the study's seven sparse times) as FOCE-I observations in µg/L
    (:data:`pkpd_lib.pmx.popmodels.PK_MODEL_UG_PER_L`), a pre-dose sample missing as
    below quantification (it is 0 before the first dose)."""
    n = qd.n_patients if n_patients is None else n_patients
    sparse = qd.at_times(times_h)
    conc = sparse.conc_obs[:n].copy()
    conc[:, sparse.times_h == 0.0] = np.nan
    return pm.pk_observations(
        pm.UG_PER_MG * conc,
        sparse.times_h,
        qd.regimens[:n],
        qd.population.covariates.iloc[:n],
    )


def population_pk_starts(
    train: datasets.Dataset, n_patients: int = POPULATION_PK_PATIENTS
) -> nlme.MultiStartFit:
    """FOCE-I fits of :data:`pkpd_lib.pmx.popmodels.PK_MODEL_UG_PER_L` to the first
    ``n_patients`` training patients' sparse QD concentrations
    (:func:`sparse_pk_observations`), one from each of
    :data:`pkpd_lib.pmx.popmodels.PK_STARTS` (a modeller's guesses); fits come from,
    and go to, the store."""
    if not (isinstance(n_patients, int) and 2 <= n_patients <= train.n_patients):
        raise ValueError(
            f"n_patients must be a whole number from 2 to {train.n_patients}, got {n_patients!r}"
        )
    data = sparse_pk_observations(train, n_patients)
    return nlme.fit_foce_starts(pm.PK_MODEL_UG_PER_L, data, pm.PK_STARTS, cache_dir="default")


def population_pk_fit(
    train: datasets.Dataset, n_patients: int = POPULATION_PK_PATIENTS
) -> nlme.NLMEFit:
    """The population PK model a modeller estimates from training data: the lowest OFV
    of :func:`population_pk_starts`. A fit that did not converge, or rests on a bound,
    is an error, not a prior."""
    best = population_pk_starts(train, n_patients).best
    if not best.converged or best.at_bound:
        raise ValueError(f"the population PK fit failed: {best.convergence}")
    return best


def individual_pk(
    population: nlme.NLMEFit, qd: datasets.Dataset, times_h=sampling.SPARSE_TIMES_H
) -> dict[str, np.ndarray]:
    """Each patient's empirical Bayes ka (1/h), CL (L/h) and V (L), arrays (N,), from its
    QD concentrations at ``times_h`` (default the seven sparse times) under the estimated
    ``population`` PK model."""
    data = sparse_pk_observations(qd, times_h=times_h)
    return nlme.individual_parameters(population, data, nlme.conditional_modes(population, data))


def locked_study(info: Information, regimens: dict[str, reg.Regimen]) -> LockedData:
    """The data of ``info`` for the QD-trained networks: the book's training and
    validation patients (with PD variability if ``info`` has it), and for each regimen
    in ``regimens`` (plus the validation regimen) the validation patients and the
    locked test patients, never used elsewhere in the book."""
    extra = info.extra_eta_sd
    sets = datasets.study_datasets("dense", extra_eta_sd=extra)
    pop_seed, obs_seed = LOCKED_TEST_SEEDS
    populations = {
        "validation": sets["val"].population,
        "test": sample_population(LOCKED_SIZE, pop_seed, LOCKED_FIRST_ID, extra_eta_sd=extra),
    }
    population = population_pk_fit(sets["train"]) if info.pk_prior == "estimated" else None
    train_fit = _qd_fit(info, sets["train"], population)
    val_fit = _qd_fit(info, sets["val"], population)
    train_x = _inputs(info, sets["train"], train_fit, sets["train"])
    val_x = _inputs(info, sets["val"], val_fit, sets["val"])
    cases, qd_x = {}, {}
    for split, pop in populations.items():
        seed = obs_seed if split == "test" else STUDY_VAL_OBS_SEED
        if split == "validation":
            qd, fit = sets["val"], val_fit
        else:
            qd = datasets.simulate_dataset(pop, reg.qd(), obs_seed=seed)
            fit = _qd_fit(info, qd, population)
        qd_x[split] = _inputs(info, qd, fit, qd)
        for name, d in _regimen_datasets(pop, regimens, seed).items():
            cases[split, name] = (_inputs(info, d, fit, qd), d.truth.pd)
    return LockedData(
        info, train_x, sets["train"].pd_obs, val_x, sets["val"].pd_obs, cases, qd_x, populations
    )


def _regimen_datasets(pop, regimens: dict[str, reg.Regimen], seed: int) -> dict:
    """``pop`` simulated under the validation regimen and each of ``regimens``, the
    k-th with observation seed ``seed + 10 k`` (k = 1 for the validation regimen)."""
    all_regimens = {VALIDATION_REGIMEN.name: VALIDATION_REGIMEN, **regimens}
    return {
        name: datasets.simulate_dataset(pop, regimen, obs_seed=seed + 10 * (k + 1))
        for k, (name, regimen) in enumerate(all_regimens.items())
    }


def locked_test_datasets(
    info: Information, regimens: dict[str, reg.Regimen]
) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
    """The locked test patients' simulated data, the same that :func:`locked_study`
    converts for the networks (same seeds, when ``regimens`` lists the same regimens
    in the same order): their QD data (what is known before a new regimen: screening
    PD, PD and concentrations under QD) and their data under the validation regimen
    and each of ``regimens`` (observations, and the noise-free truth to score)."""
    qd = _development_qd(info)
    return qd, _regimen_datasets(qd.population, regimens, LOCKED_TEST_SEEDS[1])


def _development_qd(info: Information) -> datasets.Dataset:
    """The development patients (the old locked set's seeds) and their QD data, with
    the PD variability of ``info``."""
    pop_seed, obs_seed = LOCKED_TEST_SEEDS
    pop = sample_population(LOCKED_SIZE, pop_seed, LOCKED_FIRST_ID, extra_eta_sd=info.extra_eta_sd)
    return datasets.simulate_dataset(pop, reg.qd(), obs_seed=obs_seed)


def _estimated_pk_prior(info: Information) -> nlme.NLMEFit | None:
    """The population PK fit to the training patients of ``info`` when its PK prior is
    estimated (:func:`population_pk_fit`), else None."""
    if info.pk_prior != "estimated":
        return None
    train = datasets.study_datasets("dense", extra_eta_sd=info.extra_eta_sd)["train"]
    return population_pk_fit(train)


def typical_curve(population, baseline_pd, regimen: reg.Regimen, times_h) -> np.ndarray:
    """The population-typical PD (N, T) for each patient's covariates under ``regimen``:
    the covariate model without random effects, scaled to the patient's baseline input.
    A modeller with the population model could compute it (here it uses the true model,
    so it is an upper bound on what such a reference achieves)."""
    p = individual_params(population.covariates).as_dict()
    p["R0"] = np.asarray(baseline_pd, float)
    return simulate(p, regimen, times_h).pd


#: The conformal calibration patients of the protocol: size and first ID (no other set's
#: IDs overlap them), seeds by name (``calibration/...``).
CALIBRATION_SIZE = 200
CALIBRATION_FIRST_ID = 60001


def calibration_case(
    info: Information, pk_fit: nlme.NLMEFit | None = None, at_h: float = 0.0
) -> tuple[dict, np.ndarray]:
    """The protocol's ``calibration`` patients under the validation regimen (q18h): the
    network inputs of ``info`` (from their own QD data, as for every other set) and the
    noise-free truth (N, T). They serve the conformal multiplier only: no early
    stopping, no choice reads them. Seeds: :func:`pkpd_lib.pmx.sampling.named_seed` of
    ``"calibration/population"``, ``"calibration/observations/QD"`` and
    ``"calibration/observations/q18h"``. ``pk_fit``: the population PK fit that an
    estimated PK prior comes from (default: the book's, :func:`population_pk_fit` of
    the training patients). ``at_h`` > 0: scenario S48's calibration, q18h from
    ``at_h`` after QD (:func:`switch_cases`, observations seeded
    ``"calibration/observations/q18h from <at_h> h"``), the inputs from what is known
    at the switch; the caller scores the times from ``at_h``."""
    pop = sample_population(
        CALIBRATION_SIZE,
        sampling.named_seed("calibration/population"),
        CALIBRATION_FIRST_ID,
        extra_eta_sd=info.extra_eta_sd,
    )
    qd = datasets.simulate_dataset(
        pop, reg.qd(), obs_seed=sampling.named_seed("calibration/observations/QD")
    )
    name = VALIDATION_REGIMEN.name
    if pk_fit is None:
        pk_fit = _estimated_pk_prior(info)
    if at_h:
        fit = _qd_fit(info, qd, pk_fit, SWITCH_PK_TIMES_H)
        cases = switch_cases(info, qd, fit, {name: VALIDATION_REGIMEN}, "calibration", at_h)
        return cases[name]
    d = datasets.simulate_dataset(
        pop, VALIDATION_REGIMEN, obs_seed=sampling.named_seed(f"calibration/observations/{name}")
    )
    fit = _qd_fit(info, qd, pk_fit)
    return _inputs(info, d, fit, qd), d.truth.pd


#: Observed PD of the population PD fit: every 4 h (a multiple of popmodels.PD_STEP_H).
POPULATION_PD_EVERY_H = 4
#: The PD structures a modeller compares (transit steps), and the one kept when their
#: objectives tie.
POPULATION_PD_TRANSIT_STEPS = (3, 2)


def population_pd_data(
    train: datasets.Dataset,
    pk,
    n_patients: int = POPULATION_PK_PATIENTS,
) -> tuple[nlme.Observations, dict[str, float]]:
    """The data of the population PD fits and their starting values: the first
    ``n_patients`` training patients' observed PD every :data:`POPULATION_PD_EVERY_H` h
    (biomarker units), driven by their PK; :data:`~pkpd_lib.pmx.popmodels.PD_START` with
    ``R0`` the mean observed baseline.

    ``pk``: the population PK fit of the same patients (:func:`population_pk_fit`; its
    individual estimates drive the PD, as a modeller's would), or a mapping of each
    training patient's ``ka`` (1/h), ``CL`` (L/h) and ``V`` (L) (the oracle setting's
    true PK, ``train.population.params.as_dict()``; the first ``n_patients`` are read).
    """
    n = n_patients
    if isinstance(pk, nlme.NLMEFit):
        pk_params = pk.individual
    else:
        pk_params = {k: np.asarray(pk[k], float)[:n] for k in ("ka", "CL", "V")}
    pd_obs = train.pd_obs[:n, ::POPULATION_PD_EVERY_H]
    data = pm.pd_data(
        regimens=train.regimens[:n],
        times_h=train.times_h[::POPULATION_PD_EVERY_H],
        pk_params=pk_params,
        covariates=train.population.covariates.iloc[:n],
        pd_obs=pd_obs,
    )
    return data, {**pm.PD_START, "R0": float(np.nanmean(pd_obs[:, 0]))}


def population_pd_fits(
    train: datasets.Dataset,
    pk_fit: nlme.NLMEFit,
    n_patients: int = POPULATION_PK_PATIENTS,
) -> dict[int, nlme.NLMEFit]:
    """FOCE-I fits of :func:`pkpd_lib.pmx.popmodels.pd_model` with each of
    :data:`POPULATION_PD_TRANSIT_STEPS` to the first ``n_patients`` training patients'
    observed PD every :data:`POPULATION_PD_EVERY_H` h, driven by their individual PK
    under ``pk_fit`` (:func:`population_pk_fit` of the same patients), by transit steps;
    the sequential PK-then-PD fit of chapters 16 and 17, from and to the store."""
    data, start = population_pd_data(train, pk_fit, n_patients)
    return {
        k: nlme.fit_foce(pm.pd_model(k), data, start, standard_errors=k == 3, cache_dir="default")
        for k in POPULATION_PD_TRANSIT_STEPS
    }


def population_pd_fit(
    train: datasets.Dataset, pk_fit: nlme.NLMEFit, n_patients: int = POPULATION_PK_PATIENTS
) -> nlme.NLMEFit:
    """The PD structure a modeller keeps from :func:`population_pd_fits`: the lowest OFV
    (the structures have as many parameters, so also the lowest AIC). A fit that did not
    converge is an error."""
    fits = population_pd_fits(train, pk_fit, n_patients)
    best = min(fits.values(), key=lambda fit: fit.ofv)
    if not best.converged:
        raise ValueError(f"the population PD fit failed: {best.convergence}")
    return best


def fitted_typical_curve(
    pk_fit: nlme.NLMEFit,
    pd_fit: nlme.NLMEFit,
    population,
    baseline_pd,
    regimen: reg.Regimen,
    times_h,
) -> np.ndarray:
    """The population-typical PD (N, T) a modeller computes from the FOCE-I fits: each
    patient's covariates with every random effect 0 (PK and PD), but the baseline R0 set
    to the patient's baseline input (biomarker units), under ``regimen`` at ``times_h``
    (multiples of :data:`pkpd_lib.pmx.popmodels.PD_STEP_H`). No generating value is read
    (:func:`typical_curve` is its oracle twin, from the true model). ``population``:
    the patients (their covariates are read)."""
    n = population.n_patients
    base = np.asarray(baseline_pd, float)
    if base.shape != (n,) or not np.all(np.isfinite(base) & (base > 0)):
        raise ValueError(f"baseline_pd must be {n} finite values > 0, got shape {base.shape}")
    regimens = reg.per_patient(regimen, n)
    # no samples: the covariates are all a typical prediction reads
    no_samples = pm.pk_observations(np.full((n, 1), np.nan), [0.0], regimens, population.covariates)
    pk = nlme.individual_parameters(pk_fit, no_samples, np.zeros((n, len(pk_fit.model.random))))
    data = pm.pd_data(
        regimens=regimens, times_h=times_h, pk_params=pk, covariates=population.covariates
    )
    eta = np.zeros((n, len(pd_fit.model.random)))
    typical_r0 = nlme.individual_parameters(pd_fit, data, eta)["R0"]
    eta[:, pd_fit.model.random.index("R0")] = np.log(base / typical_r0)
    return nlme.individual_predictions(pd_fit, data, eta)


def baseline_of(x: dict) -> np.ndarray:
    """The baseline input (biomarker units) of a feature mapping."""
    return np.asarray(x["BASE_PD"], float)


#: The switch time of the protocol's primary scenario S48 (h).
SWITCH_AT_H = 48.0
#: The PK samples known at the switch (h): 2 and 6 h after the first dose, and the
#: troughs at 24 h and 48 h (taken before that time's dose).
SWITCH_PK_TIMES_H = np.array([2.0, 6.0, 24.0, 48.0])


@dataclass
class SwitchStudy:
    """The development patients in scenario S48 under one :class:`Information` setting.

    Every patient takes QD until :attr:`at_h`, then the regimen asked about
    (:func:`pkpd_lib.pmx.regimens.switched`). ``cases``: for each regimen name (QD
    included: QD throughout), the network inputs and the noise-free truth (N, T).
    Everything the inputs read is known at the switch: the screening baseline, the
    QD PD at 12-48 h (early-PD settings), the concentrations at
    :data:`SWITCH_PK_TIMES_H` (predicted concentrations) or, as an oracle, the hourly
    concentrations (observed under QD before the switch, under the new schedule after).
    ``window``: the times scored (T,), from the switch to the end.
    """

    info: Information
    at_h: float
    times_h: np.ndarray
    cases: dict[str, tuple[dict, np.ndarray]]

    @property
    def window(self) -> np.ndarray:
        return self.times_h >= self.at_h


def switch_study(
    info: Information, regimens: dict[str, reg.Regimen], at_h: float = SWITCH_AT_H
) -> SwitchStudy:
    """Scenario S48 of the protocol on the development patients (the test patients of
    :func:`locked_study`, with the same QD data): each of ``regimens`` started at
    ``at_h`` after QD, the networks' inputs built from what is known then.

    Observations under a switched regimen are drawn with
    :func:`pkpd_lib.pmx.sampling.named_seed` of ``"development/observations/<name>"``;
    before the switch a patient's observed history is its QD draw.
    """
    if "QD" not in regimens:
        raise ValueError(f"regimens must include 'QD' (the reference), got {sorted(regimens)}")
    qd = _development_qd(info)
    fit = _qd_fit(info, qd, _estimated_pk_prior(info), SWITCH_PK_TIMES_H)
    cases = switch_cases(info, qd, fit, regimens, "development", at_h)
    return SwitchStudy(info, float(at_h), qd.times_h, cases)


def switch_cases(
    info: Information,
    qd: datasets.Dataset,
    fit,
    regimens: dict[str, reg.Regimen],
    set_name: str,
    at_h: float = SWITCH_AT_H,
    unshifted: tuple[str, ...] = (),
) -> dict[str, tuple[dict, np.ndarray]]:
    """For each of ``regimens`` started at ``at_h`` after QD, the network inputs of the
    patients whose QD data are ``qd`` (``fit``: their PK from what is known at the
    switch, :func:`_qd_fit` at :data:`SWITCH_PK_TIMES_H`) and the noise-free truth
    (N, T). Observations under the switched schedule ``"<name> from <at_h> h"`` are
    drawn with ``named_seed("<set_name>/observations/<schedule>")``; before the switch
    a patient's observed history is its QD draw. The regimens named in ``unshifted``
    keep their own dose times after the switch (:func:`switch_schedules`)."""
    before = qd.times_h < at_h
    cases = {}
    for name, schedule in switch_schedules(regimens, at_h, unshifted).items():
        seed = sampling.named_seed(f"{set_name}/observations/{schedule.name}")
        d = datasets.simulate_dataset(qd.population, schedule, obs_seed=seed)
        x = _inputs(info, d, fit, qd)
        if info.conc == "observed":  # one observed history: QD's before the switch
            x["conc"] = np.where(before, qd.conc_obs, d.conc_obs).astype("float32")
        cases[name] = (x, d.truth.pd)
    return cases


def switch_schedules(
    regimens: dict[str, reg.Regimen], at_h: float = SWITCH_AT_H, unshifted: tuple[str, ...] = ()
) -> dict[str, reg.Regimen]:
    """Each of ``regimens`` taken after QD from ``at_h``, named ``"<name> from <at_h> h"``:
    started at ``at_h`` (BID's first dose at ``at_h``), or, for the names in
    ``unshifted`` (deviations of QD on a day of treatment), with its doses at or after
    ``at_h`` at their own times, so a day-4 deviation stays on day 4."""
    unknown = set(unshifted) - set(regimens)
    if unknown:
        raise ValueError(f"unshifted names regimens not given: {sorted(unknown)}")
    return {
        name: reg.switched(
            reg.qd(), r, at_h=at_h, name=f"{name} from {at_h:g} h", shift=name not in unshifted
        )
        for name, r in regimens.items()
    }
