"""The book's study: its data sets, experiments, information settings, scores, classical
comparison and plots, on top of :mod:`pkpd_lib.pmx` and :mod:`pkpd_lib.nets`. See
:mod:`pkpd_lib` for the modules."""
