"""Command line: ``python -m pkpd_lib train --design dense|sparse --out DIR [--seed N]``.

Trains the book's chosen network for the design from scratch and writes
``DIR/model.keras`` and ``DIR/metrics.json`` (test scores per regimen, configuration,
training history).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pkpd_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train the book's chosen model and save it with its metrics"
    )
    train.add_argument("--design", choices=("dense", "sparse"), required=True)
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-epochs", type=int, default=None, help="cap the epochs (quick runs)")
    args = parser.parse_args(argv)

    from . import networks as nw
    from . import study

    config = study.CHOSEN[args.design]
    if args.max_epochs is not None:
        config = nw.NetworkConfig(**{**asdict(config), "max_epochs": args.max_epochs})
    data = study.study_data(args.design)
    print(f"training {config.label} on the {args.design} design, seed {args.seed}", flush=True)
    result = study.fit(data, config, seed=args.seed, cache_dir=None)
    args.out.mkdir(parents=True, exist_ok=True)
    nw.save_model(result.model, args.out / "model.keras")
    scores = study.evaluate(result.model, data)
    report = {
        "design": args.design,
        "seed": args.seed,
        "config": asdict(config),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "validation_rel_rmse_%": study.validation_rel_rmse(result.model, data),
        "test": json.loads(scores.to_json(orient="index")),
        "history": result.history,
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(scores.round(2).to_string())
    print(f"wrote {args.out / 'model.keras'} and {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
