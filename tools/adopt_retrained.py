"""Put the networks that retrain shards trained again into the committed store.

    python tools/adopt_retrained.py FOLDER [FOLDER ...]

Each FOLDER is a shard's folder (``_build/retrain/shard-K-of-N``). Every network its
report (``retrained.jsonl``) lists replaces the stored one, model and record, so that the
store holds what training under this environment gives (the stored run's decisions
replayed: its record says ``"best_epoch_rule": "replayed"``). The record keeps the stored
``seconds``: the shard plan weighs results by them, and a shard's own timing is taken on a
shared core. Fits are left alone (a shard writes only their estimates and OFV). The
chapters must then be executed again (``tasks.py execute``) and committed with the store.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pkpd_lib.files import REPORT_NAME, write_text_atomic  # noqa: E402

STORE = ROOT / "data" / "trained"


def adopt(folder: Path, store: Path = STORE) -> list[str]:
    """Replace each network of ``store`` that the shard folder ``folder`` trained again
    (per its report) by the new one; returns the records replaced. A network the report
    lists but the folder or the store lacks is an error (nothing is replaced)."""
    report = folder / REPORT_NAME
    if not report.is_file():
        raise FileNotFoundError(f"{folder} has no {REPORT_NAME}: not a retrain shard's folder")
    lines = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    records = [line["record"] for line in lines if line["kind"] == "network"]
    pairs = []
    for record in records:
        new, old = folder / record, store / record
        for path in (new, new.with_suffix(".keras"), old, old.with_suffix(".keras")):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: cannot adopt {record}")
        pairs.append((new, old))
    for new, old in pairs:
        meta = json.loads(new.read_text())
        meta["seconds"] = json.loads(old.read_text())["seconds"]
        shutil.copyfile(new.with_suffix(".keras"), old.with_suffix(".keras"))
        write_text_atomic(old, json.dumps(meta), overwrite=True)
    return records


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    total = 0
    for arg in sys.argv[1:]:
        done = adopt(Path(arg))
        total += len(done)
        print(f"{arg}: {len(done)} networks adopted")
    print(f"{total} networks adopted; now run python3 tools/tasks.py execute")
