"""Neural ODEs in Keras: a fixed-step integrator and two ODE layers.

* :func:`integrate_rk4`: classical fourth-order Runge-Kutta on a fixed grid, in
  TensorFlow (gradients flow through it), with an exogenous input that is linearly
  interpolated inside each step and optional jumps added to the state at grid points
  (a dose into a depot). Tested against scipy on linear systems with known solutions.
* :class:`NeuralODE`: a latent state ``z`` (starting at 0, the pre-dose steady state)
  whose derivative is a small tanh network of ``z`` and the per-step inputs
  (concentration, static features); the network of :mod:`pkpd_lib.nets.networks` reads the
  biomarker out of ``z`` with a dense layer.
* :class:`TurnoverUDE`: a hybrid in the spirit of universal differential equations. The
  known skeleton is an indirect-response (turnover) model for the fractional change from
  baseline ``r = R/R0 - 1``, ``dr/dt = kout * (S - r)``, with one population ``kout``
  (1/h) learned; a small network takes the place of the unknown drive and delay: latent
  states ``z`` driven by the inputs, ``dz/dt = f(z, u)``, and the stimulation
  ``S = g(z)``. Concentrations come from the one-compartment PK model (observed, or
  predicted by :mod:`pkpd_lib.pmx.pkfit`), so the PK skeleton is solved outside the network.

Both layers take the network's per-step features (N, T, F) on an hourly grid and return
(N, T, D) states; :func:`pkpd_lib.nets.networks.build_network` builds them when
``NetworkConfig.kind`` is ``"node"`` or ``"ude"``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .networks import keras, tf


def integrate_rk4(
    rhs: Callable,
    y0,
    inputs,
    step_h: float = 1.0,
    substeps: int = 1,
    jumps=None,
):
    """Integrate ``dy/dt = rhs(y, u)`` with RK4 on a grid of step ``step_h`` (h).

    Parameters
    ----------
    rhs : callable
        ``rhs(y, u)``: the derivative (N, D) of the state ``y`` (N, D) given the input
        ``u`` (N, F), in TensorFlow operations.
    y0 : array_like or tensor, (N, D)
        The state at the first grid point, in the dtype of ``inputs``.
    inputs : array_like or tensor, (T, N, F)
        The exogenous input at each of the T grid points, linearly interpolated inside a
        step.
    step_h : float, default 1.0
        The grid step (h).
    substeps : int, default 1
        RK4 steps per grid interval.
    jumps : array_like or tensor, (T, N, D), optional
        Added to the state at each grid point before integrating on (a dose at that
        time); none by default.

    Returns
    -------
    tensor, (T, N, D)
        The states at the grid points, after each point's jump.

    Raises
    ------
    ValueError
        If ``substeps`` is not an integer >= 1, ``step_h`` is not finite and > 0,
        ``inputs`` is not (T, N, F) with T >= 1 or ``y0`` not (N, D), or ``jumps`` is not
        (T, N, D) (sizes not known yet, a symbolic batch, are not compared).

    Examples
    --------
    >>> import numpy as np
    >>> decay = lambda y, u: -0.5 * y  # dy/dt = -0.5 y, y(0) = 1
    >>> y = integrate_rk4(decay, np.ones((1, 1)), np.zeros((5, 1, 1)), substeps=4)
    >>> np.round(y.numpy()[:, 0, 0], 4).tolist()
    [1.0, 0.6065, 0.3679, 0.2231, 0.1353]
    >>> np.round(np.exp(-0.5 * np.arange(5)), 4).tolist()
    [1.0, 0.6065, 0.3679, 0.2231, 0.1353]
    """
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")
    if not (np.isfinite(step_h) and step_h > 0):
        raise ValueError(f"step_h must be a finite number > 0, got {step_h!r}")
    u = tf.convert_to_tensor(inputs)
    y0 = tf.convert_to_tensor(y0, dtype=u.dtype)
    if u.shape.rank != 3 or y0.shape.rank != 2:
        raise ValueError(
            f"inputs must be (T, N, F) and y0 (N, D), got {tuple(u.shape)} and {tuple(y0.shape)}"
        )
    if u.shape[0] == 0:
        raise ValueError("inputs has no time points (T = 0): nothing to integrate")
    if jumps is None:
        jumps = tf.zeros((tf.shape(u)[0], tf.shape(y0)[0], tf.shape(y0)[1]), u.dtype)
    jumps = tf.convert_to_tensor(jumps, dtype=u.dtype)
    _check_jumps(jumps.shape, u.shape, y0.shape)
    h = step_h / substeps

    def interval(y, pair):
        u_a, u_b, jump = pair
        for k in range(substeps):
            w0, w1 = k / substeps, (k + 0.5) / substeps
            w2 = (k + 1) / substeps
            u0 = u_a + w0 * (u_b - u_a)
            um = u_a + w1 * (u_b - u_a)
            u1 = u_a + w2 * (u_b - u_a)
            k1 = rhs(y, u0)
            k2 = rhs(y + 0.5 * h * k1, um)
            k3 = rhs(y + 0.5 * h * k2, um)
            k4 = rhs(y + h * k3, u1)
            y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return y + jump

    first = y0 + jumps[0]
    rest = tf.scan(interval, (u[:-1], u[1:], jumps[1:]), initializer=first)
    return tf.concat([first[None], rest], axis=0)


def _check_jumps(jumps, inputs, y0) -> None:
    """``jumps`` must be (T, N, D) for (T, N, F) inputs and an (N, D) state; sizes not
    known yet (a symbolic batch) are not compared."""
    expected = (inputs[0], y0[0], y0[1])
    if jumps.rank != 3 or any(
        a is not None and b is not None and a != b for a, b in zip(jumps, expected, strict=True)
    ):
        shown = ", ".join("?" if n is None else str(n) for n in expected)
        raise ValueError(
            f"jumps must be (T, N, D) = ({shown}) like the inputs' T and the state y0's "
            f"(N, D), got {tuple(jumps)}"
        )


def _mlp(hidden: int, out: int, name: str) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Dense(hidden, activation="tanh", name=f"{name}_hidden"),
            keras.layers.Dense(out, name=f"{name}_out", kernel_initializer="zeros"),
        ],
        name=name,
    )


@keras.saving.register_keras_serializable(package="pkpd_lib")
class NeuralODE(keras.layers.Layer):
    """Latent ODE ``dz/dt = f(z, u)``, ``z(0) = 0``; ``f`` is a ``hidden``-unit tanh
    network with a zero-initialised output (the untrained model is at steady state).
    Input (N, T, F) per-step features on a grid of ``step_h`` hours; output (N, T,
    ``latent``).

    Parameters
    ----------
    latent : int, default 4
        Latent states, the size of ``z``.
    hidden : int, default 16
        Hidden units of ``f``.
    step_h : float, default 1.0
        The grid step (h).
    substeps : int, default 1
        RK4 steps per grid interval (:func:`integrate_rk4`).
    **kwargs
        Passed to :class:`keras.layers.Layer` (e.g. ``name``).

    Raises
    ------
    ValueError
        If ``latent``, ``hidden`` or ``substeps`` is not an integer >= 1 (a Python or
        numpy integer; ``1.5`` is not truncated), or ``step_h`` is not finite and > 0.

    Examples
    --------
    >>> NeuralODE(latent=2, hidden=3).get_config()["latent"]
    2
    >>> NeuralODE(substeps=1.5)
    Traceback (most recent call last):
    ...
    ValueError: substeps must be an integer >= 1, got 1.5
    """

    def __init__(
        self, latent: int = 4, hidden: int = 16, step_h: float = 1.0, substeps: int = 1, **kwargs
    ):
        for name, value in (("latent", latent), ("hidden", hidden), ("substeps", substeps)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (np.isfinite(step_h) and step_h > 0):
            raise ValueError(f"step_h must be a finite number > 0, got {step_h!r}")
        super().__init__(**kwargs)
        self.latent, self.hidden = int(latent), int(hidden)
        self.step_h, self.substeps = float(step_h), int(substeps)
        self.f = _mlp(self.hidden, self.latent, "derivative")

    def build(self, input_shape):
        """Build ``f`` for the latent states and the F features.

        Parameters
        ----------
        input_shape : tuple
            (N, T, F).
        """
        self.f.build((None, self.latent + input_shape[-1]))

    def rhs(self, z, u):
        """The derivative ``f(z, u)``.

        Parameters
        ----------
        z : tensor, (N, latent)
            The latent state.
        u : tensor, (N, F)
            The features at that time.

        Returns
        -------
        tensor, (N, latent)
            ``dz/dt`` (per h).
        """
        return self.f(tf.concat([z, u], axis=-1))

    def call(self, x):
        """Integrate from ``z = 0`` at the first grid point.

        Parameters
        ----------
        x : tensor, (N, T, F)
            Per-step features on the grid of step ``step_h`` (h).

        Returns
        -------
        tensor, (N, T, latent)
            ``z`` at each grid point.
        """
        u = tf.transpose(x, (1, 0, 2))
        z0 = tf.zeros((tf.shape(x)[0], self.latent), x.dtype)
        z = integrate_rk4(self.rhs, z0, u, self.step_h, self.substeps)
        return tf.transpose(z, (1, 0, 2))

    def compute_output_shape(self, input_shape):
        """The shape of the output.

        Parameters
        ----------
        input_shape : tuple
            (N, T, F).

        Returns
        -------
        tuple
            (N, T, ``latent``).
        """
        return (*input_shape[:-1], self.latent)

    def get_config(self):
        return {
            **super().get_config(),
            "latent": self.latent,
            "hidden": self.hidden,
            "step_h": self.step_h,
            "substeps": self.substeps,
        }


@keras.saving.register_keras_serializable(package="pkpd_lib")
class TurnoverUDE(NeuralODE):
    """Turnover skeleton ``dr/dt = kout (S - r)`` for ``r = R/R0 - 1`` with a learned
    population ``kout`` (1/h, started at ``kout0_per_h``, not the truth), driven by a
    latent ODE ``dz/dt = f(z, u)`` through ``S = g(z)``, a dense layer. Output (N, T, 1):
    ``r``.

    Parameters
    ----------
    latent : int, default 3
        Latent states, the size of ``z``.
    hidden : int, default 16
        Hidden units of ``f``.
    step_h : float, default 1.0
        The grid step (h).
    substeps : int, default 1
        RK4 steps per grid interval.
    kout0_per_h : float, default 0.05
        The starting value of ``kout`` (1/h); it must be > 0, as the layer learns
        ``log(kout)``.
    **kwargs
        Passed to :class:`keras.layers.Layer` (e.g. ``name``).

    Raises
    ------
    ValueError
        If ``kout0_per_h`` is not a finite number > 0, or as :class:`NeuralODE` for the
        other arguments.

    Examples
    --------
    >>> TurnoverUDE(kout0_per_h=0.0)
    Traceback (most recent call last):
    ...
    ValueError: kout0_per_h must be a finite number > 0 (the layer learns log(kout)), got 0.0
    """

    def __init__(
        self,
        latent: int = 3,
        hidden: int = 16,
        step_h: float = 1.0,
        substeps: int = 1,
        kout0_per_h: float = 0.05,
        **kwargs,
    ):
        if not (np.isfinite(kout0_per_h) and kout0_per_h > 0):
            raise ValueError(
                "kout0_per_h must be a finite number > 0 (the layer learns log(kout)), "
                f"got {kout0_per_h!r}"
            )
        super().__init__(latent, hidden, step_h, substeps, **kwargs)
        self.kout0_per_h = float(kout0_per_h)
        self.g = keras.layers.Dense(1, name="stimulation")

    def build(self, input_shape):
        """Build ``f``, ``g`` and the weight ``log_kout``.

        Parameters
        ----------
        input_shape : tuple
            (N, T, F).
        """
        super().build(input_shape)
        self.g.build((None, self.latent))
        self.log_kout = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(np.log(self.kout0_per_h)),
            name="log_kout",
        )

    @property
    def kout_per_h(self) -> float:
        """The learned population turnover rate constant (1/h)."""
        return float(np.exp(self.log_kout.numpy()))

    def rhs(self, y, u):
        """The derivative of the state ``y = (z, r)``.

        Parameters
        ----------
        y : tensor, (N, latent + 1)
            The latent states ``z`` and, last, ``r``.
        u : tensor, (N, F)
            The features at that time.

        Returns
        -------
        tensor, (N, latent + 1)
            ``dz/dt = f(z, u)`` and ``dr/dt = kout (g(z) - r)`` (per h).
        """
        z, r = y[:, :-1], y[:, -1:]
        dz = self.f(tf.concat([z, u], axis=-1))
        dr = tf.exp(self.log_kout) * (self.g(z) - r)
        return tf.concat([dz, dr], axis=-1)

    def call(self, x):
        """Integrate from ``z = 0``, ``r = 0`` (baseline) at the first grid point.

        Parameters
        ----------
        x : tensor, (N, T, F)
            Per-step features on the grid of step ``step_h`` (h).

        Returns
        -------
        tensor, (N, T, 1)
            ``r = R/R0 - 1`` at each grid point.
        """
        u = tf.transpose(x, (1, 0, 2))
        y0 = tf.zeros((tf.shape(x)[0], self.latent + 1), x.dtype)
        y = integrate_rk4(self.rhs, y0, u, self.step_h, self.substeps)
        return tf.transpose(y[:, :, -1:], (1, 0, 2))

    def compute_output_shape(self, input_shape):
        """The shape of the output.

        Parameters
        ----------
        input_shape : tuple
            (N, T, F).

        Returns
        -------
        tuple
            (N, T, 1).
        """
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "kout0_per_h": self.kout0_per_h}
