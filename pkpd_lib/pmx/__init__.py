"""Pharmacometrics: regimens, models, virtual patients, PK kernels and fits (numpy, scipy
and pandas; never TensorFlow). See :mod:`pkpd_lib` for the modules."""
