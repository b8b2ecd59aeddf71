"""The protocol's selection rule for a training grid."""

import pytest

from pkpd_lib.study import experiments


def test_cheapest_within_prefers_fewer_epochs_then_the_larger_batch():
    errors = {(100, 800): 3.00, (250, 800): 3.05, (100, 1600): 2.90, (250, 1600): 2.95}
    # 3.05 is within 2% of 2.90? no (5.2%): only the 1600-epoch cells qualify
    assert experiments.cheapest_within(errors) == (250, 1600)
    assert experiments.cheapest_within(errors, tolerance=0.06) == (250, 800)
    assert experiments.cheapest_within(errors, tolerance=0.04) == (100, 800)
    assert experiments.cheapest_within({(250, 800): 1.0}) == (250, 800)


@pytest.mark.parametrize(
    "errors, tolerance, message",
    [
        ({}, 0.02, "no grid cell"),
        ({(250, 800): float("nan")}, 0.02, "finite"),
        ({(250, 800): 1.0}, -0.1, "tolerance"),
    ],
)
def test_cheapest_within_refuses_what_it_cannot_choose_from(errors, tolerance, message):
    with pytest.raises(ValueError, match=message):
        experiments.cheapest_within(errors, tolerance)
