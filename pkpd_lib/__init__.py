"""pkpd_lib: the helper package of the book "An LSTM for drug exposure and response".

One module per concept, grouped below by what it is about. TensorFlow is imported only
by :mod:`~pkpd_lib.networks` and :mod:`~pkpd_lib.node` (and what imports them: the
study modules and the command line).

Pharmacometrics (numpy, scipy and pandas):
:mod:`~pkpd_lib.regimens` (dosing schedules), :mod:`~pkpd_lib.model` (model structures
and the dosed ODE integrator), :mod:`~pkpd_lib.population` (virtual patients),
:mod:`~pkpd_lib.sampling` (designs, seeds, residual error), :mod:`~pkpd_lib.nonmem`
(NONMEM-style tables), :mod:`~pkpd_lib.pkfit` (empirical Bayes individual PK),
:mod:`~pkpd_lib.classical` (sequential PK/PD fits), :mod:`~pkpd_lib.nlme` (FOCE-I),
:mod:`~pkpd_lib.popmodels` (population models of the book's drug),
:mod:`~pkpd_lib.warfarin` (the warfarin data and model), :mod:`~pkpd_lib.vpc` (visual
predictive checks), :mod:`~pkpd_lib.metrics` (errors and intervals),
:mod:`~pkpd_lib.files` (atomic writes, the store of results) and
:mod:`~pkpd_lib.reproducibility` (the regression check's comparison).

Networks: :mod:`~pkpd_lib.features` (the network inputs, TensorFlow-free),
:mod:`~pkpd_lib.networks` (LSTM construction, training, storage, prediction) and
:mod:`~pkpd_lib.node` (neural ODE and turnover UDE layers).

The book's study: :mod:`~pkpd_lib.datasets` (the study's data sets),
:mod:`~pkpd_lib.study` (chosen networks, evaluation, sparse methods),
:mod:`~pkpd_lib.realistic` (information settings, the locked test set) and
:mod:`~pkpd_lib.plots`; ``python -m pkpd_lib`` is the command line.
"""

__version__ = "0.1.0"
