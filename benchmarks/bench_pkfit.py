"""Benchmark: empirical Bayes PK fits of 1000 patients from the sparse design, all
patients in one least-squares problem with a block-diagonal Jacobian sparsity, against
one fit per patient.

Run: python3 tools/tasks.py bench   (or python benchmarks/bench_pkfit.py [N])
"""

import sys
import time

import numpy as np

from pkpd_lib.pmx import pkfit
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.pmx.sampling import DENSE_TIMES_H, SPARSE_TIMES_H
from pkpd_lib.study import datasets


def main(n: int = 1000) -> None:
    pop = sample_population(n, seed=1)
    data = datasets.simulate_dataset(pop, reg.qd(), DENSE_TIMES_H, obs_seed=2)
    sparse = data.at_times(SPARSE_TIMES_H)
    cov = pop.covariates
    t0 = time.perf_counter()
    joint = pkfit.fit_individual_pk(sparse.conc_obs, SPARSE_TIMES_H, reg.qd(), cov)
    vectorised = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [
        pkfit.fit_individual_pk(
            sparse.conc_obs[i : i + 1], SPARSE_TIMES_H, reg.qd(), cov.iloc[i : i + 1]
        )
        for i in range(n)
    ]
    loop = time.perf_counter() - t0
    single_eta = np.concatenate([f.etas.to_numpy() for f in single])
    single_obj = np.concatenate([f.objective for f in single])
    differ = np.abs(joint.etas.to_numpy() - single_eta).max(axis=1) > 1e-3
    print(f"empirical Bayes ka, CL, V of {n} patients from {SPARSE_TIMES_H.size} samples each")
    print(f"  one joint problem: {vectorised:8.2f} s")
    print(f"  per-patient fits : {loop:8.2f} s")
    print(f"  speed-up         : {loop / vectorised:8.1f} x")
    print(f"  patients whose estimates differ by > 1e-3 in any eta: {differ.sum()} of {n}")
    better = np.sum(joint.objective[differ] < single_obj[differ])
    print(f"  of those, the joint fit reached the lower objective for {better}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
