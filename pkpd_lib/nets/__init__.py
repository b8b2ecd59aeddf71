"""The networks: their inputs, the Keras LSTMs and the neural ODE layers, on top of
:mod:`pkpd_lib.pmx`. See :mod:`pkpd_lib` for the modules."""
