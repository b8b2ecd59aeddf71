"""pkpd_lib: the helper package of the book "An LSTM for drug exposure and response".

One module per concept, in three floors; each floor imports only from the ones below it
(and from the two root modules), so the pharmacometrics can be used without TensorFlow.

:mod:`pkpd_lib.pmx`, pharmacometrics (numpy, scipy and pandas; never TensorFlow):

* :mod:`~pkpd_lib.pmx.regimens`: dosing schedules
* :mod:`~pkpd_lib.pmx.pk`: closed-form PK kernels, superposed over doses
* :mod:`~pkpd_lib.pmx.model`: model structures and the dosed ODE integrator
* :mod:`~pkpd_lib.pmx.population`: virtual patients and their covariates
* :mod:`~pkpd_lib.pmx.sampling`: designs, seeds, residual error
* :mod:`~pkpd_lib.pmx.pkfit`: empirical Bayes individual PK
* :mod:`~pkpd_lib.pmx.nonmem`: NONMEM-style tables
* :mod:`~pkpd_lib.pmx.nlme`: FOCE-I population fits
* :mod:`~pkpd_lib.pmx.vpc`: visual predictive checks
* :mod:`~pkpd_lib.pmx.popmodels`: population models of the book's drug
* :mod:`~pkpd_lib.pmx.warfarin`: the warfarin data and model

:mod:`pkpd_lib.nets`, the networks (TensorFlow and Keras), on pmx:

* :mod:`~pkpd_lib.nets.features`: the network inputs (itself TensorFlow-free)
* :mod:`~pkpd_lib.nets.networks`: LSTM construction, training, storage, prediction
* :mod:`~pkpd_lib.nets.node`: neural ODE and turnover UDE layers

:mod:`pkpd_lib.study`, the book's study, on pmx and nets:

* :mod:`~pkpd_lib.study.datasets`: the study's data sets
* :mod:`~pkpd_lib.study.experiments`: chosen networks, evaluation, sparse methods
* :mod:`~pkpd_lib.study.realistic`: information settings, the development and
  calibration sets, the switch at 48 h, the population fits' references
* :mod:`~pkpd_lib.study.protocol`: the protocol's replicates, test sets, scenarios and
  scoring
* :mod:`~pkpd_lib.study.search`: protocol version 2's population-model search
* :mod:`~pkpd_lib.study.metrics`: errors and intervals
* :mod:`~pkpd_lib.study.classical`: sequential PK/PD fits
* :mod:`~pkpd_lib.study.plots`: figure helpers

At the root, importing nothing from the package:

* :mod:`~pkpd_lib.files`: atomic writes, the store of results
* :mod:`~pkpd_lib.reproducibility`: the regression check's comparison
* ``python -m pkpd_lib`` (:mod:`pkpd_lib.__main__`): the command line
"""

__version__ = "0.1.0"
