"""Write ``data/example_nonmem.csv``: the example data set of the how-to page "Your own
data" (``book/chapters/own_data.md``).

A simulated dose-ranging study of the book's drug, so that the truth is known and the
page can check its estimates and predictions against it: 120 subjects
(:func:`pkpd_lib.pmx.population.sample_population`, seed :data:`SEED`, with the
between-subject PD variability of the realistic chapters), each given 50, 100 or 150 mg
once daily for 7 days (one dose record with ADDL=6, II=24), concentrations (CMT 2) at
6 irregular times and the biomarker (CMT 6) at 8 irregular whole hours including 0 h,
simulated with :func:`pkpd_lib.pmx.model.simulate` at each subject's own times, with
the proportional residual errors of :data:`pkpd_lib.pmx.sampling.RESIDUAL_CV`. Besides
WT, AGE and SEX the file has two columns the models do not use (CRCL, mL/min; SITE),
as real files do.

Deterministic: the same file on every run. Usage::

    python tools/make_example_data.py [--out data/example_nonmem.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd_lib.pmx import model, nonmem, population, sampling
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.study import realistic

#: Population seed (the page samples the same subjects to know the truth).
SEED = 2026
#: Seed of the design (doses, times), extra columns and residual errors.
DESIGN_SEED = 2027
N_SUBJECTS = 120
DOSES_MG = (50.0, 100.0, 150.0)
#: Windows (h) of the 6 concentration samples, one sample in each.
CONC_WINDOWS_H = ((0.5, 2.0), (2.0, 6.0), (8.0, 23.5), (48.0, 72.0), (96.0, 120.0), (144.0, 168.0))
#: Windows (whole hours, inclusive) of the 7 biomarker samples after the one at 0 h.
PD_WINDOWS_H = ((4, 12), (16, 36), (40, 60), (64, 90), (96, 120), (124, 146), (150, 168))
OUT = Path(__file__).resolve().parents[1] / "data" / "example_nonmem.csv"


def simulated_population() -> population.Population:
    """The subjects of the file, with their true parameters."""
    return population.sample_population(
        N_SUBJECTS, seed=SEED, extra_eta_sd=realistic.PD_VARIABILITY
    )


def example_table() -> pd.DataFrame:
    """The NONMEM-style table written to the file."""
    pop = simulated_population()
    rng = np.random.default_rng(DESIGN_SEED)
    doses = rng.permutation(np.repeat(DOSES_MG, N_SUBJECTS // len(DOSES_MG)))
    conc_t = np.column_stack([rng.uniform(a, b, N_SUBJECTS) for a, b in CONC_WINDOWS_H]).round(2)
    pd_t = np.column_stack(
        [np.zeros(N_SUBJECTS)] + [rng.integers(a, b + 1, N_SUBJECTS) for a, b in PD_WINDOWS_H]
    ).astype(float)
    creatinine = rng.uniform(0.6, 1.4, N_SUBJECTS)  # mg/dL
    site = rng.integers(1, 5, N_SUBJECTS)
    cov = pop.covariates
    crcl = (140 - cov["AGE"]) * cov["WT"] / (72 * creatinine) * np.where(cov["SEX"] == 1, 0.85, 1)
    rows = []
    for i in range(N_SUBJECTS):
        times = np.union1d(conc_t[i], pd_t[i])
        params = {k: v[i : i + 1] for k, v in pop.params.as_dict().items()}
        sim = model.simulate(params, reg.qd(doses[i]), times)
        at = {t: j for j, t in enumerate(times)}
        conc = sampling.add_proportional_error(
            sim.conc_mg_L[0, [at[t] for t in conc_t[i]]], sampling.RESIDUAL_CV["conc"], rng
        )
        resp = sampling.add_proportional_error(
            sim.pd[0, [at[t] for t in pd_t[i]]], sampling.RESIDUAL_CV["pd"], rng
        )
        common = {
            "ID": pop.ids[i],
            "WT": round(float(cov["WT"][i]), 1),
            "AGE": round(float(cov["AGE"][i]), 1),
            "SEX": int(cov["SEX"][i]),
            "CRCL": round(float(crcl[i]), 1),
            "SITE": int(site[i]),
        }
        rows.append(
            {
                **common,
                "TIME": 0.0,
                "AMT": doses[i],
                "EVID": 1,
                "MDV": 1,
                "CMT": 1,
                "DV": np.nan,
                "ADDL": 6,
                "II": 24.0,
            }
        )
        for cmt, ts, dv in ((2, conc_t[i], conc), (6, pd_t[i], resp)):
            for t, y in zip(ts, dv, strict=True):
                rows.append(
                    {
                        **common,
                        "TIME": float(t),
                        "AMT": 0.0,
                        "EVID": 0,
                        "MDV": 0,
                        "CMT": cmt,
                        "DV": float(f"{y:.4g}"),
                        "ADDL": 0,
                        "II": 0.0,
                    }
                )
    table = pd.DataFrame(rows)
    # samples at a dose time come before the dose (troughs); PD at 0 h is the baseline
    table["_order"] = table["EVID"]
    table = table.sort_values(["ID", "TIME", "_order", "CMT"], kind="stable", ignore_index=True)
    columns = [
        "ID",
        "TIME",
        "AMT",
        "EVID",
        "MDV",
        "CMT",
        "DV",
        "WT",
        "AGE",
        "SEX",
        "ADDL",
        "II",
        "CRCL",
        "SITE",
    ]
    return table[columns]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = example_table()
    nonmem.check_nonmem(table)
    # pandas writes each float's shortest form (63.1, not 63.100000000000001)
    table.to_csv(args.out, index=False, na_rep=".", lineterminator="\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
