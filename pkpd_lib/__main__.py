"""Command line: ``python -m pkpd_lib train --design dense|sparse --out DIR [--seed N]
[--schedules QD|random|deviating]``.

Trains the book's chosen network for the design from scratch and writes
``DIR/model.keras`` and ``DIR/metrics.json`` (test scores per regimen, configuration,
training history).

What it guarantees about files: every argument and the output folder are checked before
any simulation or training starts, and a problem ends the program with a one-line
message and exit code 2; an existing model or metrics file is only replaced with
``--overwrite``; both files are written completely beside their final names and renamed
into place together at the end, the model first, all or nothing, so an interrupted run
(Ctrl-C: exit code 130) leaves the folder as it was, and so does a run whose files
cannot be placed (another process wrote one meanwhile: a one-line message, exit code 1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

OUTPUTS = ("model.keras", "metrics.json")
MAX_SEED = 2**32 - 1
#: Longest file or folder name (bytes) most file systems allow.
NAME_MAX = 255


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {value}")
    return value


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a folder, got {text!r}")
    return Path(text)


def output_problem(out: Path, overwrite: bool) -> str | None:
    """Why ``out`` cannot receive the outputs, or None if it can."""
    try:
        return _name_problem(out) or _place_problem(out, overwrite)
    except OSError as err:  # any other reason the system gives
        return f"--out {_shown(out)}: {err.strerror or err}"


def _shown(out: Path, width: int = 60) -> str:
    """``out`` for a message, its middle left out if it is longer than ``width``."""
    text = str(out)
    return text if len(text) <= width else f"{text[: width // 2]}...{text[-width // 2 :]}"


def _name_problem(out: Path) -> str | None:
    """A name in ``out`` longer than the file system allows, or None."""
    for part in out.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            return (
                f"--out {_shown(out)}: the name {part[:20]}... is "
                f"{len(os.fsencode(part))} bytes long; file systems allow at most {NAME_MAX}"
            )
    return None


def _place_problem(out: Path, overwrite: bool) -> str | None:
    if out.is_symlink() and not out.exists():
        return f"--out {out} is a broken link (to {os.readlink(out)})"
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a folder"
    for name in OUTPUTS:
        if os.path.lexists(out / name) and not (out / name).is_file():
            return f"--out {out}: {out / name} is not a file (a folder?); cannot replace it"
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        return f"--out {out} already holds {', '.join(existing)}; pass --overwrite to replace"
    ancestor = out
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if ancestor.is_symlink() and not ancestor.exists():
        return f"--out {out} lies under {ancestor}, a broken link (to {os.readlink(ancestor)})"
    if not ancestor.is_dir():
        return f"--out {out} lies under {ancestor}, which is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"--out {out}: no permission to write in {ancestor}"
    return None


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pkpd_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train the book's chosen model and save it with its metrics"
    )
    train.add_argument("--design", choices=("dense", "sparse"), required=True)
    train.add_argument("--out", type=_folder, required=True, help="output folder")
    train.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED} (default 0)")
    train.add_argument("--max-epochs", type=_positive_int, default=None, help="cap the epochs")
    train.add_argument(
        "--schedules",
        choices=("QD", "random", "deviating"),
        default="QD",
        help="training schedules: QD (the study), random, or random with missed, doubled "
        "and stopped doses (the adherence chapter's recommendation for real-world use)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace model.keras/metrics.json in --out"
    )
    args = parser.parse_args(argv)
    problem = output_problem(args.out, args.overwrite)
    if problem:
        train.error(problem)
    return args


def _write_outputs(out: Path, model, report: dict, overwrite: bool) -> None:
    """Write both files beside their final names, then rename both into place, the model
    first, all or nothing (:func:`pkpd_lib.files.atomic_paths`); a Ctrl-C during the
    renames is held back until they are done."""
    from .files import atomic_paths
    from .nets import networks as nw

    out.mkdir(parents=True, exist_ok=True)
    held, previous = [], signal.getsignal(signal.SIGINT)
    try:
        with atomic_paths([out / name for name in OUTPUTS], overwrite) as (model_tmp, metrics_tmp):
            nw.save_model(model, model_tmp, overwrite=True)
            metrics_tmp.write_text(json.dumps(report, indent=2))
            signal.signal(signal.SIGINT, lambda *_: held.append(True))
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        print("interrupt received while renaming: both files were completed", file=sys.stderr)


def train(args: argparse.Namespace) -> int:
    from .nets import networks as nw
    from .study import experiments

    config = experiments.CHOSEN[args.design]
    if args.max_epochs is not None:
        config = nw.NetworkConfig(**{**asdict(config), "max_epochs": args.max_epochs})
    print(f"simulating the {args.design} study's patients ...", flush=True)
    data = experiments.study_data(args.design, train_regimen=args.schedules)
    print(
        f"training {config.label} on the {args.design} design ({args.schedules} schedules), "
        f"seed {args.seed}",
        flush=True,
    )
    result = experiments.fit(data, config, seed=args.seed, cache_dir=None)
    scores = experiments.evaluate(result.model, data)
    report = {
        "design": args.design,
        "schedules": args.schedules,
        "seed": args.seed,
        "config": asdict(config),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "validation_rel_rmse_%": experiments.validation_rel_rmse(result.model, data),
        "test": json.loads(scores.to_json(orient="index")),
        "history": result.history,
    }
    try:
        _write_outputs(args.out, result.model, report, args.overwrite)
    except OSError as err:
        print(f"error: {err}; neither {' nor '.join(OUTPUTS)} was written", file=sys.stderr)
        return 1
    print(scores.round(2).to_string())
    print(f"wrote {args.out / OUTPUTS[0]} and {args.out / OUTPUTS[1]}")
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    try:
        return train(args)
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
