"""nbval, with the numbers of networks and fits compared to their last printed digit.

nbval compares a fresh kernel's outputs with the stored ones character for character.
That is right for simulation and data tables, which are exact by construction. A code
cell tagged ``trained-scores`` prints numbers computed by networks or fits, whose
inference may round the last printed digit the other way on another CPU: it is compared
with :func:`pkpd_lib.reproducibility.numbers_match` instead (the same words, tables and
verdicts, every number within one unit of its last printed digit, or within
``$PKPD_NBVAL_RTOL`` in the retrain tier, or for a population model's table also
tagged ``fit-table`` within ``RETRAIN_FIT_TABLE_RTOL`` there; see
:func:`pkpd_lib.reproducibility.cell_tolerance`). Untagged cells stay exact.
"""

from __future__ import annotations

import copy

from nbval.plugin import IPyNbCell

from pkpd_lib.reproducibility import cell_tolerance, numbers_match

_exact_compare = IPyNbCell.compare_outputs


def _texts(output) -> dict[str, tuple[object, str]]:
    """Every text an output holds, by kind: stream text and each text/* MIME type,
    mapped to its (container, key)."""
    if "text" in output:
        return {"stream": (output, "text")}
    data = output.get("data", {})
    return {key: (data, key) for key in data if key.startswith("text/")}


def within_tolerance(fresh: list, stored: list, rtol: float = 0.0) -> list:
    """A copy of ``fresh`` in which each text that matches its stored twin (same output,
    same kind) within the tolerance is replaced by that twin, so nbval's exact
    comparison passes there and still shows every difference that is not within it."""
    fresh = copy.deepcopy(fresh)
    for new, old in zip(fresh, stored, strict=False):
        if new.get("output_type") != old.get("output_type"):
            continue
        old_texts = _texts(old)
        for kind, (box, key) in _texts(new).items():
            if kind not in old_texts:
                continue
            old_box, old_key = old_texts[kind]
            if isinstance(box[key], str) and isinstance(old_box[old_key], str):
                if numbers_match(old_box[old_key], box[key], rtol):
                    box[key] = old_box[old_key]
    return fresh


def _compare_outputs(self, test, ref, skip_compare=None):
    rtol = cell_tolerance(self.cell.metadata.get("tags", []))
    if rtol is not None:
        test = within_tolerance(test, ref, rtol)
    return _exact_compare(self, test, ref, skip_compare)


IPyNbCell.compare_outputs = _compare_outputs


#: Notebooks that take longest from an empty model cache, longest first. pytest-xdist
#: hands files to its workers in collection order; starting these first keeps one worker
#: from idling at the end while the other runs a long chapter.
LONGEST_FIRST = (
    "13_neural_ode",
    "11_realistic_information",
    "17_one_bench",
    "16_population_model",
    "15_warfarin_networks",
    "14_warfarin",
    "12_adherence",
    "07_sparse_that_extrapolates",
    "10_richer_pd",
)


def _rank(item) -> int:
    name = getattr(item, "path", None)
    stem = name.stem if name is not None else ""
    return LONGEST_FIRST.index(stem) if stem in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(session, config, items):
    # a stable sort: the cells of a notebook keep their order
    items.sort(key=_rank)
