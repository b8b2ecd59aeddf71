"""The objects that the examples of some package modules share, for their doctests.

Those examples would otherwise build the same small data set or network in every
docstring. :func:`shared_example_objects` puts them into pytest's ``doctest_namespace``
for the doctests of their module only, fresh for each doctest; each module's docstring
names them for the readers of the API reference (keep the two in step).

This file sits at the repository root, outside the package: ``pkpd_lib`` never imports
pytest, its wheel does not ship this file, and the package's layering test
(``tests/test_packaging.py``, which reads every module of ``pkpd_lib/nets``) does not see
it. pytest loads it for every run from the repository (the package's doctests are
collected with ``--doctest-modules``); it imports the package only for those doctests.
"""

from __future__ import annotations

import numpy as np
import pytest


def _network_examples() -> dict:
    """:mod:`pkpd_lib.nets.networks`: inputs ``x`` of 4 patients on 8 time points, their
    PD ``y`` (4, 8) and an untrained 2-unit LSTM ``model`` built from them."""
    from pkpd_lib.nets.networks import NetworkConfig, build_network, scaling_stats

    x = {
        "conc": np.random.default_rng(0).random((4, 8)),
        "BASE_PD": np.full(4, 100.0),
        "WT": [60.0, 70, 80, 90],
        "AGE": [30.0, 40, 50, 60],
        "SEX": [0.0, 1, 0, 1],
    }
    y = 100 + np.random.default_rng(1).random((4, 8))
    model = build_network(NetworkConfig(units=(2,)), 8, scaling_stats(x, y))
    return {"np": np, "x": x, "y": y, "model": model}


def _dataset_examples() -> dict:
    """:mod:`pkpd_lib.study.datasets`: the modules ``population`` and ``regimens``, two
    virtual patients ``pop`` and their data set ``d`` under QD sampled at 0, 1 and 2 h."""
    from pkpd_lib.pmx import population, regimens
    from pkpd_lib.study.datasets import simulate_dataset

    pop = population.sample_population(2, seed=1)
    d = simulate_dataset(pop, regimens.qd(), [0.0, 1.0, 2.0])
    return {"np": np, "population": population, "regimens": regimens, "pop": pop, "d": d}


#: The modules whose examples share objects, and what builds them.
SHARED_EXAMPLES = {
    "pkpd_lib.nets.networks": _network_examples,
    "pkpd_lib.study.datasets": _dataset_examples,
}


@pytest.fixture(autouse=True)
def shared_example_objects(request, doctest_namespace, monkeypatch):
    """Give a doctest of a module in :data:`SHARED_EXAMPLES` that module's shared objects
    (built afresh, so no example sees another's changes), and only for that doctest."""
    test = getattr(request.node, "dtest", None)  # a doctest item's doctest.DocTest
    build = SHARED_EXAMPLES.get(test.globs.get("__name__")) if test is not None else None
    if build is not None:
        for name, value in build().items():
            monkeypatch.setitem(doctest_namespace, name, value)
