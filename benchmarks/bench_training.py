"""Benchmark: training speed of the chosen dense configuration against the naive Keras
set-up (one time point per LSTM step, batch 32, Adam 1e-3), same network size, same data.

Run: python3 tools/tasks.py bench   (or python benchmarks/bench_training.py [--quick])

Prints seconds per epoch for both, and (unless --quick) trains both to convergence and
prints epochs, total time and validation relative RMSE, so speed is never bought with
accuracy.
"""

import sys
from dataclasses import replace

from pkpd_lib.study import experiments


def main(quick: bool = False) -> None:
    data = experiments.study_data("dense")
    configs = {"naive": experiments.NAIVE, "chosen": experiments.CHOSEN["dense"]}
    print(
        f"{'set-up':8s} {'units':6s} {'block':>5s} {'batch':>5s} {'lr':>7s} {'s/epoch':>8s}"
        + ("" if quick else f" {'epochs':>6s} {'total s':>8s} {'val rel RMSE %':>15s}")
    )
    fresh = {"seed": 0, "cache_dir": None, "report_every": None}  # never from the cache
    per_epoch = {}
    for name, config in configs.items():
        timing = experiments.fit(data, replace(config, max_epochs=4), **fresh)
        # epoch 1 includes graph tracing: time the others
        per_epoch[name] = (timing.seconds - timing.epoch_seconds[0]) / (timing.epochs_run - 1)
        line = (
            f"{name:8s} {config.label:6s} {config.block:5d} {config.batch_size:5d} "
            f"{config.learning_rate:7.0e} {per_epoch[name]:8.3f}"
        )
        if not quick:
            full = experiments.fit(data, config, **fresh)
            val = experiments.validation_rel_rmse(full.model, data)
            line += f" {full.epochs_run:6d} {full.seconds:8.1f} {val:15.2f}"
        print(line, flush=True)
    print(f"speed-up per epoch: {per_epoch['naive'] / per_epoch['chosen']:.1f}x")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
