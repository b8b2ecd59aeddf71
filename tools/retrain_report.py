"""The report of one shard of the retrain tier: every stored result that the shard plan
gives to the shard was computed again, and each within its tolerance.

    python tools/retrain_report.py FOLDER K/N
    python tools/retrain_report.py --covers FOLDER...

FOLDER is the shard's folder (``$PKPD_RETRAIN_DIR``); exits non-zero, naming them, if a
result of the shard was not computed again or moved beyond its tolerance. With
``--covers``, over the folders of all the shards: a start of a multi-start fit that
wandered to a worse optimum passes its shard when an equally good stored start remains
(``covered_by``); one of those must have reproduced, in whichever shard computed it.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pkpd_lib.files import REPORT_NAME, shard_plan, stored_records  # noqa: E402

STORE = ROOT / "data" / "trained"


def check(folder: Path, k: int, n: int, store: Path = STORE) -> list[str]:
    """The problems of shard ``k`` of ``n`` (empty: it passed), after printing its
    report: one line per result, its time, and the change against the stored one."""
    records = stored_records(store)
    plan = shard_plan(records, n)
    mine = sorted((name for name, shard in plan.items() if shard == k), key=records.get)
    report = folder / REPORT_NAME
    text = report.read_text() if report.exists() else ""
    lines = [json.loads(line) for line in text.splitlines()]
    done = {line["record"]: line for line in lines}
    print(
        f"shard {k}/{n}: {len(mine)} stored results, {sum(records[m] for m in mine) / 60:.0f}"
        " min to compute when stored"
    )
    problems = []
    for name in reversed(mine):
        line = done.get(name)
        if line is None:
            problems.append(f"{name}: not computed again (no chapter asked for it)")
            print(f"  MISSING   {name}")
            continue
        extra = f", OFV {line['ofv_difference']:.3g}" if "ofv_difference" in line else ""
        if line.get("covered_by"):
            extra += f"; the kept fit is that of {', '.join(line['covered_by'])} (--covers)"
        if line.get("judged_by"):
            extra += f"; judged by what its caller reads: {line['judged_by']}"
        verdict = "ok" if line["within"] else "MOVED"
        print(
            f"  {verdict:<9} {name}: {line['seconds']:.0f} s (stored {records[name]:.0f} s),"
            f" change {line['difference']:.2g} (tolerance {line['tolerance']:.2g}){extra}"
        )
        if not line["within"]:
            problems.append(f"{name}: moved beyond its tolerance ({line})")
    return problems


def summary(lines: list[dict]) -> str:
    """One line per kind of result over the shards' report ``lines``: how many, how many
    within, the largest change, for networks in how many the stored run's early-stopping
    decision would repeat (``decision_repeats``), and for fits how many each rule judged
    (``covered_by``, ``judged_by`` up to its colon)."""
    out = []
    for kind in sorted({line["kind"] for line in lines}):
        mine = [line for line in lines if line["kind"] == kind]
        text = (
            f"{kind}s: {len(mine)}, {sum(line['within'] for line in mine)} within,"
            f" largest change {max(line['difference'] for line in mine):.2g}"
        )
        if any("ofv_difference" in line for line in mine):
            text += f", largest OFV change {max(ln.get('ofv_difference', 0) for ln in mine):.2g}"
        repeats = [line["decision_repeats"] for line in mine if "decision_repeats" in line]
        if repeats:
            text += f"; early stopping would decide the same in {sum(repeats)} of {len(repeats)}"
        covered = sum(bool(line.get("covered_by")) for line in mine)
        if covered:
            text += f"; {covered} start(s) in another optimum, covered"
        rules = Counter(ln["judged_by"].split(":")[0] for ln in mine if ln.get("judged_by"))
        if rules:
            text += "; judged by what the caller reads: " + ", ".join(
                f"{n} {rule}" for rule, n in sorted(rules.items())
            )
        out.append(text)
    return "\n".join(out)


def covers(folders: list[Path]) -> list[str]:
    """The problems of the starts that passed their shards because an equally good stored
    start remains (``covered_by``): each needs one of those reported as reproduced (within
    its tolerance, neither covered nor judged by another rule) in one of the shards'
    ``folders``; empty: none (no report at all is a problem: nothing was checked).
    Prints the :func:`summary` of all the shards' reports first."""
    lines = [
        json.loads(line)
        for folder in folders
        for report in sorted(Path(folder).rglob(REPORT_NAME))
        for line in report.read_text().splitlines()
    ]
    if not lines:
        return [f"no {REPORT_NAME} under {', '.join(map(str, folders))}: nothing was checked"]
    print(summary(lines))
    reproduced = {
        ln["record"]
        for ln in lines
        if ln["within"] and not ln.get("covered_by") and not ln.get("judged_by")
    }
    problems = []
    for line in lines:
        cover = line.get("covered_by")
        if cover and not reproduced.intersection(cover):
            problems.append(
                f"{line['record']}: ended in another optimum, and none of the equally good"
                f" starts {cover} is reported as reproduced"
            )
        elif cover:
            print(f"  covered   {line['record']}: by {sorted(reproduced.intersection(cover))}")
    return problems


if __name__ == "__main__":
    if sys.argv[1] == "--covers":
        problems = covers([Path(f) for f in sys.argv[2:]])
        if problems:
            sys.exit("retrain tier failed:\n" + "\n".join(problems))
        sys.exit(0)
    folder, shard = Path(sys.argv[1]), sys.argv[2]
    k, n = (int(part) for part in shard.split("/"))
    problems = check(folder, k, n)
    if problems:
        sys.exit("retrain shard failed:\n" + "\n".join(problems))
