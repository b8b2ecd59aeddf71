"""Benchmark: simulate 1000 patients under QD, BID and TID on the hourly grid,
vectorised (one ODE system for all patients) against a per-patient loop.

Run: python3 tools/tasks.py bench   (or python benchmarks/bench_simulation.py [N])
Target on a 2-core machine: vectorised under 2 s for all three regimens, >= 50x the loop.
"""

import sys
import time
from dataclasses import replace

import numpy as np

from pkpd_lib.pmx import model
from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.pmx.sampling import DENSE_TIMES_H


def main(n: int = 1000) -> None:
    params = sample_population(n, seed=1).params
    regimens = [reg.named(name) for name in ("QD", "BID", "TID")]
    t0 = time.perf_counter()
    for r in regimens:
        model.simulate(params, r, DENSE_TIMES_H)
    vectorised = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in regimens:
        for i in range(n):
            model.simulate(params.subset([i]), r, DENSE_TIMES_H)
    loop = time.perf_counter() - t0
    print(f"simulate {n} patients x QD, BID, TID, {DENSE_TIMES_H.size} hourly samples each")
    print(f"  vectorised : {vectorised:8.2f} s")
    print(f"  per-patient: {loop:8.2f} s")
    print(f"  speed-up   : {loop / vectorised:8.0f} x")
    stiff_row(200)


def stiff_row(n: int) -> None:
    """200 normal patients, then the same plus one stiff patient (ka = 1000 1/h, a
    half-life of 2.5 s): the stiff one is integrated apart and cannot slow the rest."""
    params = sample_population(n, seed=1).params.as_dict()
    with_stiff = {k: np.append(v, v[0]) for k, v in params.items()}
    with_stiff["ka"][-1] = 1e3
    for label, p in ((f"{n} normal", params), (f"{n} normal + 1 stiff", with_stiff)):
        t0 = time.perf_counter()
        model.simulate(p, reg.qd(), DENSE_TIMES_H)
        print(f"  QD, {label:<22}: {time.perf_counter() - t0:6.2f} s")
    # every patient stiff: PK in closed form (target well under 1 s), and the implicit
    # integrator a structure without linear PK would get
    for ka in (60.0, 2400.0):
        stiff = {**params, "ka": np.full(n, ka)}
        for structure in (model.TRANSIT_TURNOVER, replace(model.TRANSIT_TURNOVER, linear_pk=False)):
            how = "closed-form PK" if structure.linear_pk else model.STIFF_METHOD
            t0 = time.perf_counter()
            model.simulate_structure(structure, stiff, reg.qd(), DENSE_TIMES_H)
            label = f"{n} all ka {ka:g}/h, {how}"
            print(f"  QD, {label:<22}: {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
