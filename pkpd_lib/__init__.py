"""pkpd_lib: the helper package of the book "An LSTM for drug exposure and response".

One module per concept: :mod:`~pkpd_lib.regimens`, :mod:`~pkpd_lib.model`,
:mod:`~pkpd_lib.population`, :mod:`~pkpd_lib.sampling`, :mod:`~pkpd_lib.datasets`,
:mod:`~pkpd_lib.networks`, :mod:`~pkpd_lib.metrics` and :mod:`~pkpd_lib.plots`.
TensorFlow is only imported by :mod:`~pkpd_lib.networks`.
"""

__version__ = "0.1.0"
