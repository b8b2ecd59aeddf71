"""A small network data set that several test modules use (each makes it a fixture)."""

import numpy as np

from pkpd_lib.pmx import regimens as reg
from pkpd_lib.pmx.population import sample_population
from pkpd_lib.study import datasets


def small_network_data():
    """Network inputs and observed PD of 64 training and 16 validation patients under
    QD, hourly over 48 h: ``(train_x, train_y, val_x, val_y)``."""
    times = np.arange(0.0, 49.0)
    train = datasets.simulate_dataset(sample_population(64, seed=1), reg.qd(), times, obs_seed=1)
    val = datasets.simulate_dataset(sample_population(16, seed=2), reg.qd(), times, obs_seed=2)
    return datasets.network_inputs(train), train.pd_obs, datasets.network_inputs(val), val.pd_obs
