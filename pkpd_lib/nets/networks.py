"""Keras 3 sequence networks that map a concentration profile to a PD time course.

Design (one model, every size):

* Inputs, each a named Keras input so a saved model knows its features:
  ``conc`` (N, T) concentrations in mg/L; optionally ``time_h`` (N, T) sampling times
  in h (for designs whose time points are not the model's fixed grid); optionally the
  dose history at each time point, ``hours_since_dose`` (h) and ``last_dose_mg`` (mg);
  and the static
  features ``BASE_PD`` (biomarker units), ``WT`` (kg), ``AGE`` (years), ``SEX``
  (1 = female), each (N, 1).
* Scaling lives in the model: Normalization layers with the training data's mean and
  variance, so a saved model takes raw inputs in their units.
* Sequence layout: the T time points are cut into blocks of ``block`` consecutive points
  (zero-padded at the start, i.e. no drug before 0 h). Each LSTM step reads one block of
  concentrations plus the static features, and a dense read-out emits that block's PD.
  ``block=1`` is the textbook one-point-per-step layout; larger blocks give the LSTM
  fewer, wider steps, which trains several times faster on a CPU.
* Output: the network predicts the fractional change from baseline ``f``; the model
  returns ``PD = BASE_PD * (1 + f)`` in biomarker units.
* Loss: mean squared error. Targets may hold NaN where PD was not observed (e.g. an
  hourly input with PD sampled at a few hours); the loss then averages over the observed
  entries only.

TensorFlow is imported here with its native start-up notices silenced (they go to the
process's stderr and would pollute notebook outputs).

The examples assume ``np`` (numpy) and three small objects: ``x``, the inputs of 4
patients on 8 time points (``conc`` (4, 8), uniform in [0, 1) mg/L; ``BASE_PD`` 100 each;
``WT`` 60, 70, 80, 90 kg; ``AGE`` 30, 40, 50, 60 years; ``SEX`` 0, 1, 0, 1); ``y``, their
PD (4, 8), uniform in [100, 101); and ``model``, the untrained network
``build_network(NetworkConfig(units=(2,)), 8, scaling_stats(x, y))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..files import (  # CACHE_ENV, default_cache_dir re-exported: the store's names
    CACHE_ENV,  # noqa: F401
    DamagedFileError,
    StoreMissError,
    atomic_path,
    data_signature,
    default_cache_dir,  # noqa: F401
    exclusive_lock,
    locate_stored,
    note_use,
    report_retrained,
    retrain_here,
    signature_structure,
    write_text_atomic,
)
from ..reproducibility import RETRAIN_RTOL
from .features import CONC, DOSE_FEATURES, FEATURES, STATIC_FEATURES, TIME, check_values

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
#: oneDNN's instruction set, held to the one every x86-64 CPU of the last 15 years has.
#: Even with ``TF_ENABLE_ONEDNN_OPTS=0`` TensorFlow's matrix products go through oneDNN,
#: which otherwise picks its code path (SSE4.1, AVX2, AVX-512) from the CPU: the same
#: seed then trains differently in the last bits, and a network fed noisy data amplifies
#: that to 1.6% of a score within 30 epochs (measured: book/reproducibility.md). Held to
#: SSE4.1, training is the same bits on any x86-64 CPU. Set the variable before
#: importing this module to choose otherwise.
ONEDNN_ISA = "SSE41"
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", ONEDNN_ISA)


@contextlib.contextmanager
def _silence_native_stderr():
    """Redirect file descriptor 2 to /dev/null (C++ logging bypasses ``sys.stderr``)."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


with _silence_native_stderr():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()
    # "N out of the last M calls triggered tf.function retracing" is noise here: predicting
    # with several models of different input shapes retraces by design.
    tf.get_logger().setLevel("ERROR")

#: The kinds of network :func:`build_network` builds.
KINDS = ("lstm", "node", "ude", "window", "reset")

#: The fields each kind leaves out of its repr and its store key (so that models stored
#: before a field existed keep their keys).
_HIDDEN_FIELDS = {
    "lstm": ("kind", "latent", "history_h"),
    "node": ("history_h",),
    "ude": ("history_h",),
    "window": ("latent",),
    "reset": ("latent",),
}

#: Names of the inputs (see :mod:`pkpd_lib.nets.features`, where every input is defined).
CONC_INPUT, TIME_INPUT, DOSE_INPUTS = CONC, TIME, DOSE_FEATURES


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and training settings of a sequence network.

    Training: Adam at ``learning_rate`` (halved on plateaus), ``batch_size`` patients per
    step; training ends by early stopping once ``patience`` epochs pass without the
    validation loss falling by at least ``min_delta``, and ``max_epochs`` is only a safety
    cap. The ODE kinds read one time point per step (``block=1``) on an hourly grid.

    Parameters
    ----------
    units : tuple of int, default (16,)
        LSTM units per layer, e.g. ``(16,)`` or ``(16, 16)``; for the ODE kinds one
        entry, the units of the derivative network.
    block : int, default 4
        Time points per LSTM step (see the module docstring).
    time_input : bool, default False
        Feed the sampling times (h) as a per-step channel.
    dose_inputs : bool, default False
        Feed the dose history (:data:`DOSE_INPUTS`) as per-step channels.
    batch_size : int, default 32
        Patients per training step.
    learning_rate : float, default 0.01
        Adam's initial learning rate.
    max_epochs : int, default 300
        Safety cap on the epochs.
    patience : int, default 15
        Epochs without improvement before training stops.
    min_delta : float, default 0.005
        Smallest fall of the validation loss that counts as one, in PD units squared (the
        loss itself sits near 15, the variance of the 3% PD measurement error, so 0.005 is
        a plateau).
    static_features : tuple of str, default STATIC_FEATURES
        The static inputs (one value per patient), in order; by default baseline PD and
        the demographic covariates (:data:`pkpd_lib.nets.features.STATIC_FEATURES`).
        Must include ``BASE_PD``, which the output is scaled by.
    kind : {"lstm", "node", "ude", "window", "reset"}, default "lstm"
        ``"lstm"``; ``"reset"``, the LSTM with its state set to zero every ``history_h``
        hours; ``"window"``, a network that sees only the last ``history_h`` hours;
        ``"node"``, a neural ODE (:class:`pkpd_lib.nets.node.NeuralODE`) with
        ``latent`` states and a ``units[0]``-unit derivative network; or ``"ude"``, the
        turnover hybrid (:class:`pkpd_lib.nets.node.TurnoverUDE`).
    latent : int, default 4
        Latent states of the ODE kinds; an LSTM ignores it.
    history_h : int, default 0
        For ``kind="window"`` and ``kind="reset"`` only (a multiple of ``block``). A
        window network sees the last ``history_h`` hours of input and has no memory
        beyond them: a causal convolution of ``units[0]`` filters over the last
        ``history_h / block`` steps, then a dense layer per further entry of ``units``,
        then the readout. A reset network is the LSTM run on consecutive chunks of
        ``history_h`` hours, each from a zero state (:class:`MemoryChunks`): an output
        sees the input from the start of its chunk only, at most ``history_h`` hours.

    Raises
    ------
    ValueError
        If ``kind`` is unknown; an ODE kind has ``block != 1`` or more than one entry in
        ``units``; ``units`` is empty or has an entry < 1; ``block``, ``batch_size``,
        ``max_epochs``, ``patience`` or ``latent`` is not an integer >= 1;
        ``learning_rate`` is not finite and > 0; ``min_delta`` is not finite and >= 0;
        ``static_features`` lacks ``BASE_PD``; a window or reset network has no
        ``history_h`` that is a multiple of ``block``; or another kind has one.

    Examples
    --------
    >>> config = NetworkConfig(units=(16, 16))
    >>> config.label, config.step_inputs
    ('2x16', ('conc',))
    >>> NetworkConfig(max_epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: max_epochs must be an integer >= 1, got 0
    """

    units: tuple[int, ...] = (16,)
    block: int = 4
    time_input: bool = False
    dose_inputs: bool = False
    batch_size: int = 32
    learning_rate: float = 1e-2
    max_epochs: int = 300
    patience: int = 15
    min_delta: float = 0.005
    static_features: tuple[str, ...] = field(default=STATIC_FEATURES)
    kind: str = "lstm"
    latent: int = 4
    history_h: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("node", "ude") and (self.block != 1 or len(self.units) != 1):
            raise ValueError(
                f"a {self.kind!r} network reads one time point per step and has one "
                f"derivative network: use block=1 and one entry in units, got "
                f"block={self.block}, units={self.units}"
            )
        object.__setattr__(self, "static_features", tuple(self.static_features))
        if not self.units or min(self.units) < 1:
            raise ValueError(f"units must list at least one layer of >= 1 unit, got {self.units}")
        if "BASE_PD" not in self.static_features:
            raise ValueError(
                "static_features must include 'BASE_PD' (the network predicts the change "
                f"from it), got {self.static_features}"
            )
        for name in ("block", "batch_size", "max_epochs", "patience", "latent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not np.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate!r}"
            )
        if not np.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {self.min_delta!r}")
        history = self.history_h
        if isinstance(history, bool) or not isinstance(history, int | np.integer):
            raise ValueError(f"history_h must be a whole number of hours, got {history!r}")
        cut = self.kind in ("window", "reset")
        if cut and (history < self.block or history % self.block):
            raise ValueError(
                f"a {self.kind} network needs history_h, a multiple of block={self.block} "
                f"h, got {history!r}"
            )
        if not cut and history:
            raise ValueError(
                f"history_h is for kind='window' or 'reset' only, got {history!r} with "
                f"{self.kind!r}"
            )

    def __repr__(self) -> str:
        """The dataclass repr; an LSTM's leaves out the neural-ODE fields."""
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name not in _HIDDEN_FIELDS[self.kind]
        ]
        return f"NetworkConfig({', '.join(shown)})"

    @property
    def step_inputs(self) -> tuple[str, ...]:
        """Names of the per-step (N, T) inputs, in the order they are concatenated."""
        return (
            (CONC_INPUT,)
            + ((TIME_INPUT,) if self.time_input else ())
            + (DOSE_INPUTS if self.dose_inputs else ())
        )

    @property
    def label(self) -> str:
        """Short size label, e.g. ``"1x16"`` or ``"2x16"`` (equal widths) or ``"32-16"``;
        ``"node4-16"`` for a neural ODE with 4 latent states and 16 hidden units."""
        if self.kind == "window":
            return f"window{self.history_h}h-" + "-".join(str(u) for u in self.units)
        if self.kind == "reset":
            return f"reset{self.history_h}h-" + "-".join(str(u) for u in self.units)
        if self.kind != "lstm":
            return f"{self.kind}{self.latent}-{self.units[0]}"
        if len(set(self.units)) == 1:
            return f"{len(self.units)}x{self.units[0]}"
        return "-".join(str(u) for u in self.units)


@keras.saving.register_keras_serializable(package="pkpd_lib")
class TrainingRange(keras.layers.Layer):
    """An identity layer that records the range of one input in the training data, so a
    saved model knows it and :func:`predict_pd` can warn about inputs far outside it.

    Parameters
    ----------
    low, high : float
        The input's smallest and largest value in the training data, in its unit.
    **kwargs
        Passed to :class:`keras.layers.Layer` (e.g. ``name``; :func:`training_ranges`
        reads the input's name from a layer named ``<input>_range``).

    Examples
    --------
    >>> TrainingRange(40.0, 130.0, name="WT_range").get_config()["high"]
    130.0
    """

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = float(low), float(high)

    def call(self, x):
        """The input, unchanged.

        Parameters
        ----------
        x : tensor
            One input of the network: (N, T) per step or (N, 1) static.

        Returns
        -------
        tensor
            ``x`` itself.
        """
        return x

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


@keras.saving.register_keras_serializable(package="pkpd_lib")
class MemoryChunks(keras.layers.Layer):
    """Cuts a sequence of steps into consecutive chunks that a recurrent layer reads as
    separate sequences, each from a zero state; with ``inverse=True``, joins them back.

    Parameters
    ----------
    chunk : int
        Steps per chunk (the memory, in steps: ``history_h / block``).
    n_steps : int
        Steps of the whole sequence; the last chunk is padded with zeros at its end, and
        the padding is cut off again by the inverse.
    inverse : bool, default False
        Join ``(N * K, chunk, U)`` back into ``(N, n_steps, U)`` instead of cutting
        ``(N, n_steps, F)`` into ``(N * K, chunk, F)``, ``K = ceil(n_steps / chunk)``.
    **kwargs
        Passed to :class:`keras.layers.Layer` (e.g. ``name``).

    Examples
    --------
    >>> x = np.arange(10.0).reshape(1, 5, 2)
    >>> cut = MemoryChunks(2, 5)(x)
    >>> tuple(cut.shape)
    (3, 2, 2)
    >>> np.asarray(MemoryChunks(2, 5, inverse=True)(cut)).tolist() == x.tolist()
    True
    """

    def __init__(self, chunk: int, n_steps: int, inverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.chunk, self.n_steps, self.inverse = int(chunk), int(n_steps), bool(inverse)
        self.n_chunks = -(-self.n_steps // self.chunk)

    def call(self, x):
        """The steps cut into chunks (or joined back).

        Parameters
        ----------
        x : tensor
            ``(N, n_steps, F)``, or with ``inverse`` ``(N * K, chunk, U)``.

        Returns
        -------
        tensor
            ``(N * K, chunk, F)``, or with ``inverse`` ``(N, n_steps, U)``.
        """
        width = x.shape[-1]
        padded = self.n_chunks * self.chunk
        if self.inverse:
            return keras.ops.reshape(x, (-1, padded, width))[:, : self.n_steps]
        x = keras.ops.pad(x, [[0, 0], [0, padded - self.n_steps], [0, 0]])
        return keras.ops.reshape(x, (-1, self.chunk, width))

    def compute_output_shape(self, input_shape):
        """The shape :meth:`call` returns.

        Parameters
        ----------
        input_shape : tuple
            ``(batch, steps, width)``: ``n_steps`` steps when cutting, ``chunk`` steps
            (batch times chunks) when joining.
        """
        if self.inverse:
            return (None, self.n_steps, input_shape[-1])
        return (None, self.chunk, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "chunk": self.chunk,
            "n_steps": self.n_steps,
            "inverse": self.inverse,
        }


class InputRangeWarning(UserWarning):
    """Inputs far outside the range a network was trained on (e.g. wrong units).

    Examples
    --------
    >>> issubclass(InputRangeWarning, UserWarning)
    True
    """


def training_ranges(model: keras.Model) -> dict[str, tuple[float, float]]:
    """The (low, high) range of each input in the model's training data (empty for models
    saved before ranges were recorded).

    Parameters
    ----------
    model : keras.Model
        A network from :func:`build_network`, :func:`train_network` or :func:`load_model`.

    Returns
    -------
    dict of str to (float, float)
        The smallest and largest training value of each input with a recorded range
        (:class:`TrainingRange`), keyed by feature name, in the input's unit.

    Examples
    --------
    >>> training_ranges(model)["WT"]
    (60.0, 90.0)
    """
    return {
        layer.name.removesuffix("_range"): (layer.low, layer.high)
        for layer in model.layers
        if isinstance(layer, TrainingRange)
    }


def warn_far_outside(model: keras.Model, x: Mapping[str, np.ndarray]) -> None:
    """Warn (:class:`InputRangeWarning`), naming feature and patients, for inputs more than
    one training range width below the training minimum or above the maximum.

    An input whose training values were all equal takes the size of that value as its
    width (1 if it is 0).

    Parameters
    ----------
    model : keras.Model
        A network with recorded training ranges (:func:`training_ranges`).
    x : mapping of str to array_like
        Inputs keyed by feature name, one row per patient: (N, T) per step, (N,) or
        (N, 1) static. Features without a recorded range are not checked, and ranges
        of features missing from ``x`` are skipped.

    Warns
    -----
    InputRangeWarning
        One per feature far outside its range, with the count of patients and the
        first five rows.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_far_outside(model, {**x, "WT": np.array([70000.0, 70, 80, 90])})
    >>> str(caught[0].message)[:41]
    'WT is far outside its training range [60,'
    """
    for name, (low, high) in training_ranges(model).items():
        if name not in x:
            continue
        width = (high - low) or abs(high) or 1.0
        a = np.asarray(x[name], float).reshape(len(x[name]), -1)
        far = ((a < low - width) | (a > high + width)).any(axis=1)
        if far.any():
            rows = np.flatnonzero(far)
            warnings.warn(
                f"{name} is far outside its training range [{low:.4g}, {high:.4g}] for "
                f"{rows.size} patient(s) (rows {rows[:5].tolist()}"
                f"{' ...' if rows.size > 5 else ''}): check the units; the network was not "
                "trained there",
                InputRangeWarning,
                stacklevel=3,
            )


def _per_step_inputs(raw, n_times: int, block: int, mean: float, variance: float, name: str):
    """(N, T) raw values -> zero-padded, normalised (N, T/block, block) steps."""
    pad = (-n_times) % block
    x = keras.layers.Reshape((n_times, 1), name=f"{name}_column")(raw)
    if pad:
        x = keras.layers.ZeroPadding1D((pad, 0), name=f"{name}_pad")(x)
    x = keras.layers.Reshape(((n_times + pad) // block, block), name=f"{name}_blocks")(x)
    return keras.layers.Normalization(
        axis=None, mean=mean, variance=variance, name=f"{name}_scale"
    )(x)


def build_network(
    config: NetworkConfig, n_times: int, stats: Mapping[str, np.ndarray], name: str | None = None
) -> keras.Model:
    """Build (not train) a sequence network for ``n_times`` time points.

    Parameters
    ----------
    config : NetworkConfig
        The architecture: kind, layers, block and inputs.
    n_times : int
        Time points T per patient: the length of each per-step input and of the output.
    stats : mapping
        The scaling of the inputs and output, from :func:`scaling_stats`; the inputs in
        its ``"ranges"`` get a :class:`TrainingRange`.
    name : str, optional
        The model's name; by default ``"lstm_"`` and the config's label for an LSTM
        (``"lstm_1x16"``), the label alone for the other kinds (``"node4-16"``,
        ``"reset24h-16-16"``).

    Returns
    -------
    keras.Model
        Uncompiled. Inputs named by feature: per step (N, T), static (N, 1); output the PD
        (N, T) in biomarker units, or (N, T, K) for K biomarkers (``stats`` from targets
        (N, T, K)), each ``BASE_PD`` times one plus its fractional change.

    Raises
    ------
    KeyError
        If ``stats`` lacks the scaling of a per-step input of ``config`` (e.g.
        ``time_h`` with ``time_input=True``, when ``stats`` came from inputs without it).
    ValueError
        For several biomarkers with ``kind="ude"`` (its skeleton is one turnover).

    Examples
    --------
    >>> model = build_network(NetworkConfig(units=(2,)), 8, scaling_stats(x, y))
    >>> model.name, model.output_shape
    ('lstm_1x2', (None, 8))
    """
    block = config.block
    pad = (-n_times) % block
    n_steps = (n_times + pad) // block
    inputs, seen, steps = {}, {}, []
    ranges = stats.get("ranges", {})
    for key in (*config.step_inputs, *config.static_features):
        shape = (n_times,) if key in config.step_inputs else (1,)
        inputs[key] = keras.Input(shape, name=key)
        seen[key] = inputs[key]
        if key in ranges:
            seen[key] = TrainingRange(*ranges[key], name=f"{key}_range")(inputs[key])
    for key in config.step_inputs:
        steps.append(_per_step_inputs(seen[key], n_times, block, *stats[key], name=key))
    static = keras.layers.Concatenate(name="static")([seen[f] for f in config.static_features])
    static = keras.layers.Normalization(
        axis=-1, mean=stats["static_mean"], variance=stats["static_var"], name="static_scale"
    )(static)
    steps.append(keras.layers.RepeatVector(n_steps, name="static_per_step")(static))
    x = keras.layers.Concatenate(name="per_step_features")(steps)
    n_out = int(np.size(stats["frac_scale"])) if np.ndim(stats["frac_scale"]) else 0
    if config.kind in ("lstm", "reset"):
        chunk = config.history_h // block
        if config.kind == "reset":
            x = MemoryChunks(chunk, n_steps, name="memory_chunks")(x)
        for i, units in enumerate(config.units):
            x = keras.layers.LSTM(units, return_sequences=True, name=f"lstm_{i + 1}")(x)
        if config.kind == "reset":
            x = MemoryChunks(chunk, n_steps, inverse=True, name="memory_joined")(x)
        x = keras.layers.Dense(block * max(n_out, 1), name="readout")(x)
    elif config.kind == "window":
        x = keras.layers.Conv1D(
            config.units[0],
            config.history_h // block,
            padding="causal",
            activation="tanh",
            name="window",
        )(x)
        for i, units in enumerate(config.units[1:]):
            x = keras.layers.Dense(units, activation="tanh", name=f"dense_{i + 2}")(x)
        x = keras.layers.Dense(block * max(n_out, 1), name="readout")(x)
    elif config.kind == "node":
        from .node import NeuralODE

        x = NeuralODE(config.latent, config.units[0], name="neural_ode")(x)
        x = keras.layers.Dense(max(n_out, 1), name="readout")(x)
    elif n_out:
        raise ValueError(
            f"a {config.kind!r} network predicts one biomarker (its skeleton is one "
            f"turnover); the targets hold {n_out}"
        )
    else:
        from .node import TurnoverUDE

        x = TurnoverUDE(config.latent, config.units[0], name="turnover_ude")(x)
        # the skeleton returns r = R/R0 - 1 itself: undo the output scaling below
        x = keras.layers.Rescaling(
            scale=1.0 / float(stats["frac_scale"]),
            offset=-float(stats["frac_offset"]) / float(stats["frac_scale"]),
            name="r_scaled",
        )(x)
    x = keras.layers.Reshape((n_steps * block, max(n_out, 1)), name="unblock")(x)
    if pad:
        x = keras.layers.Cropping1D((pad, 0), name="unpad")(x)
    base = inputs["BASE_PD"]
    if n_out:  # K biomarkers: (N, T, K), each scaled as its own fractional change
        frac = keras.layers.Rescaling(
            scale=[float(v) for v in stats["frac_scale"]],
            offset=[float(v) for v in stats["frac_offset"]],
            name="frac_change",
        )(x)
        base = keras.layers.Reshape((1, 1), name="base_per_biomarker")(base)
    else:
        x = keras.layers.Reshape((n_times,), name="frac_change_scaled")(x)
        frac = keras.layers.Rescaling(
            scale=float(stats["frac_scale"]),
            offset=float(stats["frac_offset"]),
            name="frac_change",
        )(x)
    pd_out = keras.layers.Add(name="pd")([base, keras.layers.Multiply(name="change")([base, frac])])
    return keras.Model(inputs=inputs, outputs=pd_out, name=name or _default_name(config))


def _default_name(config: NetworkConfig) -> str:
    """The name :func:`build_network` gives a network of ``config`` by default."""
    return f"lstm_{config.label}" if config.kind == "lstm" else config.label


def scaling_stats(
    x: Mapping[str, np.ndarray], y_pd: np.ndarray, static_features=STATIC_FEATURES
) -> dict:
    """Means and variances of the training inputs, their ranges, and the scale of the
    fractional change.

    Parameters
    ----------
    x : mapping of str to array_like
        Training inputs keyed by feature name: per step (N, T), static (N,) or (N, 1);
        must hold ``BASE_PD`` and every name in ``static_features``.
    y_pd : array_like, (N, T) or (N, T, K)
        Training PD (biomarker units); NaN where not observed. (N, T, K): K biomarkers,
        each a fractional change from ``BASE_PD``.
    static_features : sequence of str, default STATIC_FEATURES
        The static inputs, in the model's order.

    Returns
    -------
    dict
        For each per-step feature in ``x``, its (mean, variance) over all entries;
        ``"static_mean"`` and ``"static_var"``, (F,) arrays over patients (variance at
        least 1e-12); ``"ranges"``, the (min, max) of each per-step and static feature in
        ``x``; ``"frac_offset"`` and ``"frac_scale"``, the mean and standard deviation of
        the fractional change ``y_pd / BASE_PD - 1`` over its observed entries (floats;
        for K biomarkers (K,) arrays, one per biomarker).

    Raises
    ------
    KeyError
        If ``x`` lacks ``BASE_PD`` or a static feature.

    Examples
    --------
    >>> sorted(scaling_stats(x, y))
    ['conc', 'frac_offset', 'frac_scale', 'ranges', 'static_mean', 'static_var']
    """
    stats = {}
    for key in (f.name for f in FEATURES.values() if f.per_step):
        if key in x:
            stats[key] = (float(np.mean(x[key])), float(np.var(x[key])))
    static = np.stack([np.asarray(x[f], float).reshape(-1) for f in static_features], axis=1)
    stats["static_mean"] = static.mean(axis=0)
    stats["static_var"] = np.maximum(static.var(axis=0), 1e-12)
    stats["ranges"] = {
        key: (float(np.min(x[key])), float(np.max(x[key])))
        for key in (*(f.name for f in FEATURES.values() if f.per_step), *static_features)
        if key in x
    }
    y_pd = np.asarray(y_pd, float)
    if y_pd.ndim == 3:  # several biomarkers (N, T, K): each its own scale, (K,)
        frac = y_pd / np.asarray(x["BASE_PD"], float).reshape(-1, 1, 1) - 1.0
        stats["frac_offset"] = np.nanmean(frac, axis=(0, 1))
        stats["frac_scale"] = np.nanstd(frac, axis=(0, 1))
        return stats
    frac = y_pd / np.asarray(x["BASE_PD"], float).reshape(-1, 1) - 1.0
    stats["frac_offset"] = float(np.nanmean(frac))
    stats["frac_scale"] = float(np.nanstd(frac))
    return stats


def model_features(model: keras.Model) -> dict[str, tuple]:
    """The named inputs a model expects, with their shapes (without the batch axis).

    Parameters
    ----------
    model : keras.Model
        A network of this module.

    Returns
    -------
    dict of str to tuple of int
        Each input's shape without the batch axis: (T,) per step, (1,) static.

    Examples
    --------
    >>> model_features(model)
    {'AGE': (1,), 'BASE_PD': (1,), 'SEX': (1,), 'WT': (1,), 'conc': (8,)}
    """
    return {t.name: tuple(t.shape[1:]) for t in model.inputs}


def check_inputs(model: keras.Model, x: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Validate and convert a feature mapping for ``model``; raise a clear error if wrong.

    Parameters
    ----------
    model : keras.Model
        The network the inputs are for.
    x : mapping of str to array_like
        Inputs keyed by feature name (e.g. a dict, or a DataFrame's columns), so the order
        of features can never be silently mixed up: per step (N, T), static (N,) or
        (N, 1), in the units of :data:`pkpd_lib.nets.features.FEATURES`.

    Returns
    -------
    dict of str to numpy.ndarray
        The model's inputs as float32 arrays in the model's order, static ones as (N, 1).

    Raises
    ------
    TypeError
        If ``x`` is neither a mapping nor has ``columns``.
    ValueError
        If a feature is missing or unexpected, does not hold numbers, has the wrong
        shape, has another number of patients than the others or none, or holds an
        invalid value (:func:`pkpd_lib.nets.features.check_values`: NaN or inf, out of
        range, not an allowed value; the message names the first offending patient).

    Examples
    --------
    >>> check_inputs(model, {k: v for k, v in x.items() if k != "AGE"})
    Traceback (most recent call last):
    ...
    ValueError: model 'lstm_1x2' expects features [...]; missing ['AGE'], unexpected []
    """
    return _check_features(model_features(model), model.name, x)


def _expected_features(config: NetworkConfig, n_times: int) -> dict[str, tuple]:
    """The inputs :func:`build_network` gives a network of ``config`` on ``n_times`` time
    points, with their shapes, in the order of :func:`model_features` (sorted by name)."""
    names = sorted((*config.step_inputs, *config.static_features))
    return {k: (n_times,) if k in config.step_inputs else (1,) for k in names}


def _check_features(
    expected: Mapping[str, tuple], model_name: str, x: Mapping[str, object]
) -> dict[str, np.ndarray]:
    """:func:`check_inputs` against the inputs ``expected`` of the model ``model_name``."""
    if not isinstance(x, Mapping) and not hasattr(x, "columns"):
        raise TypeError(
            "inputs must be a mapping from feature name to array (so their order is explicit);"
            f" this model expects {list(expected)}"
        )
    given = list(x.keys()) if isinstance(x, Mapping) else list(x.columns)
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing or extra:
        raise ValueError(
            f"model {model_name!r} expects features {list(expected)}; "
            f"missing {missing}, unexpected {extra}"
        )
    out, n = {}, None
    for name, shape in expected.items():
        try:
            a = np.asarray(x[name], dtype="float32")
        except (TypeError, ValueError) as error:
            raise ValueError(f"feature {name!r} must hold numbers: {error}") from None
        if shape == (1,) and a.ndim == 1:
            a = a[:, None]
        if a.ndim != 1 + len(shape) or a.shape[1:] != shape:
            raise ValueError(
                f"feature {name!r} has shape {a.shape}; model {model_name!r} expects "
                f"(N, {', '.join(map(str, shape))})"
            )
        if n is not None and a.shape[0] != n:
            raise ValueError(f"feature {name!r} has {a.shape[0]} patients, others have {n}")
        if a.shape[0] == 0:
            raise ValueError(f"feature {name!r} has no patients (0 rows): nothing to predict")
        n = a.shape[0]
        if name in FEATURES:
            check_values(name, a)
        elif not np.all(np.isfinite(a)):
            raise ValueError(f"feature {name!r} contains NaN or inf")
        out[name] = a
    return out


def predict_pd(model: keras.Model, x: Mapping[str, object], batch_size: int = 256) -> np.ndarray:
    """Predict PD (biomarker units), shape (N, T), from raw inputs.

    Parameters
    ----------
    model : keras.Model
        A network of this module.
    x : mapping of str to array_like
        Each of the model's feature names mapped to an array: ``conc`` (N, T) in mg/L on
        the model's time grid (for the book's dense models, hourly 0..168 h), ``time_h``
        (N, T) in h and the dose history (:data:`DOSE_INPUTS`) if the model has those
        inputs, and ``BASE_PD`` (biomarker units), ``WT`` (kg), ``AGE`` (years), ``SEX``
        (1 = female), each (N,). :func:`pkpd_lib.study.datasets.network_inputs` builds
        such a mapping from any simulated data set.
    batch_size : int, default 256
        Patients per prediction batch (a Python or numpy integer).

    Returns
    -------
    numpy.ndarray, (N, T)
        Predicted PD in biomarker units, float64; (N, T, K) for a network of K
        biomarkers (trained on targets (N, T, K)).

    Raises
    ------
    ValueError
        If ``batch_size`` is not an integer >= 1 (a ``bool`` is not one), if the model
        has more than one output, or from :func:`check_inputs`.
    TypeError
        From :func:`check_inputs`, if ``x`` is not a mapping.

    Warns
    -----
    InputRangeWarning
        For inputs far outside the training data's range (:func:`warn_far_outside`).

    Examples
    --------
    >>> from pkpd_lib.pmx import population, regimens
    >>> from pkpd_lib.pmx.model import simulate
    >>> def inputs_and_targets(seed):
    ...     pop = population.sample_population(8, seed=seed)
    ...     sim = simulate(pop.params, regimens.qd(), [0.0, 4.0, 8.0, 12.0])
    ...     static = {c: pop.covariates[c].to_numpy() for c in ("WT", "AGE", "SEX")}
    ...     return {"conc": sim.conc_mg_L, "BASE_PD": pop.params.R0, **static}, sim.pd
    >>> xy = [inputs_and_targets(seed) for seed in (1, 2)]
    >>> run = train_network(NetworkConfig(units=(2,), max_epochs=1), *xy[0], *xy[1],
    ...                     report_every=None)
    >>> predict_pd(run.model, xy[1][0]).shape
    (8, 4)
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if len(model.outputs) != 1:
        raise ValueError(
            f"predict_pd predicts one PD output; model {model.name!r} has "
            f"{len(model.outputs)} outputs"
        )
    checked = check_inputs(model, x)
    warn_far_outside(model, checked)
    # batch by batch through the model's compiled predict step: the same batches and
    # the same graph as ``model.predict``, bit for bit, without the tf.data pipeline it
    # builds and traces on every call (about 0.3 s a call; the protocol's scoring
    # makes hundreds)
    n, size = next(iter(checked.values())).shape[0], int(batch_size)
    batches = [
        model.predict_on_batch({k: v[i : i + size] for k, v in checked.items()})
        for i in range(0, n, size)
    ]
    return np.asarray(np.concatenate(batches), dtype=float)


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)


class EpochReport(keras.callbacks.Callback):
    """Prints one compact line every ``every`` epochs: the epoch, ``loss``, ``val_loss``,
    the learning rate and the seconds since training began.

    Parameters
    ----------
    every : int, default 10
        Epochs between lines (a line after epochs ``every``, ``2 * every``, ...).
    label : str, default ""
        Text that starts each line, e.g. ``"[seed 0] "``.

    Raises
    ------
    ValueError
        If ``every`` is not an integer >= 1.

    Examples
    --------
    >>> EpochReport(every=25, label="[seed 0] ").every
    25
    >>> EpochReport(every=0)
    Traceback (most recent call last):
    ...
    ValueError: every must be an integer >= 1 (epochs between lines), got 0
    """

    def __init__(self, every: int = 10, label: str = "") -> None:
        if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (epochs between lines), got {every!r}")
        super().__init__()
        self.every, self.label = every, label

    def on_train_begin(self, logs=None):
        """Start the clock of the lines.

        Parameters
        ----------
        logs : dict, optional
            Unused (Keras's callback signature).
        """
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        """Print the line of ``epoch`` if its number (from 1) is a multiple of ``every``.

        Parameters
        ----------
        epoch : int
            The epoch just ended, counted from 0.
        logs : dict
            Its metrics: ``loss``, and ``val_loss`` when validating (NaN shown without).
        """
        if (epoch + 1) % self.every == 0:
            self._line(epoch, logs)

    def _line(self, epoch, logs):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        print(
            f"{self.label}epoch {epoch + 1:4d}  loss {logs['loss']:8.3f}  "
            f"val_loss {logs.get('val_loss', float('nan')):8.3f}  lr {lr:.1e}  "
            f"{time.perf_counter() - self._t0:6.1f} s",
            flush=True,
        )


def restored_epoch(val_loss, min_delta: float) -> int:
    """The epoch (counted from 1) whose weights early stopping keeps: the last epoch that
    lowered the best validation loss so far by more than ``min_delta`` (Keras's
    ``EarlyStopping(restore_best_weights=True)``). It can come before the lowest
    validation loss, when a later epoch lowered it by less than ``min_delta``.

    Parameters
    ----------
    val_loss : sequence of float
        The validation loss of each epoch.
    min_delta : float
        The smallest decrease that counts as an improvement (>= 0).

    Returns
    -------
    int

    Examples
    --------
    >>> restored_epoch([5.0, 4.0, 3.999, 3.998], min_delta=0.005)
    2
    >>> restored_epoch([5.0, 4.0, 3.999, 3.998], min_delta=0.0)
    4
    """
    return early_stopping(val_loss, min_delta)[0]


def early_stopping(val_loss, min_delta: float, patience: int | None = None) -> tuple[int, int]:
    """What early stopping decides from a run's validation losses: the epoch it keeps
    (:func:`restored_epoch`) and the number of epochs it runs, stopping once ``patience``
    epochs pass without a fall of more than ``min_delta`` (or at the last loss given).
    The learning-rate schedule's decisions are not part of it.

    Parameters
    ----------
    val_loss : sequence of float
        The validation loss of each epoch trained.
    min_delta : float
        The smallest decrease that counts as an improvement (>= 0).
    patience : int, optional
        Epochs without an improvement before training stops; None: never.

    Returns
    -------
    tuple of (int, int)
        The kept epoch (from 1) and the number of epochs run.

    Examples
    --------
    >>> early_stopping([5.0, 4.0, 3.999, 3.998, 3.997, 1.0], min_delta=0.005, patience=3)
    (2, 5)
    """
    losses = np.asarray(val_loss, float)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"val_loss must be a non-empty sequence, got shape {losses.shape}")
    if not np.all(np.isfinite(losses)):
        raise ValueError("val_loss holds NaN or inf: training failed; no epoch can be kept")
    if not (np.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    best, kept, wait = np.inf, 0, 0
    for epoch, value in enumerate(losses):
        if epoch == 0 or value + min_delta < best:
            best, kept, wait = value, epoch, 0
            continue
        wait += 1
        if patience is not None and wait >= patience:
            return kept + 1, epoch + 1
    return kept + 1, losses.size


@dataclass(frozen=True)
class Replay:
    """The decisions of a stored training run, to repeat them instead of deciding again:
    the learning rate of each epoch (``learning_rates``, one per epoch run, as the
    learning-rate schedule set them) and the epoch whose weights to keep (``keep_epoch``,
    from 1, as early stopping chose it). The retrain tier trains with them, so that it
    compares the arithmetic of training on another machine, not decisions taken at a
    near tie of two validation losses (see :func:`train_network`).

    Examples
    --------
    >>> Replay((1e-2, 1e-2, 5e-3), keep_epoch=2).keep_epoch
    2
    >>> Replay((1e-2,), keep_epoch=2)
    Traceback (most recent call last):
    ...
    ValueError: keep_epoch must be between 1 and the 1 epochs replayed, got 2
    """

    learning_rates: tuple[float, ...]
    keep_epoch: int

    def __post_init__(self) -> None:
        rates = tuple(float(r) for r in self.learning_rates)
        if not rates or not all(np.isfinite(r) and r > 0 for r in rates):
            raise ValueError(f"learning_rates must be finite and > 0, one per epoch, got {rates}")
        object.__setattr__(self, "learning_rates", rates)
        if not (
            isinstance(self.keep_epoch, int | np.integer) and 1 <= self.keep_epoch <= len(rates)
        ):
            raise ValueError(
                f"keep_epoch must be between 1 and the {len(rates)} epochs replayed, "
                f"got {self.keep_epoch!r}"
            )

    @classmethod
    def of(cls, result: TrainingResult) -> Replay:
        """The decisions of a finished run.

        Parameters
        ----------
        result : TrainingResult
            The run: its ``history["lr"]`` (one learning rate per epoch) and its
            ``best_epoch`` (the kept epoch).

        Returns
        -------
        Replay
        """
        return cls(tuple(result.history["lr"]), int(result.best_epoch))


class _KeepEpoch(keras.callbacks.Callback):
    """Keep the weights at the end of epoch ``epoch`` (from 1) and restore them at the end
    of training."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch, self.weights = epoch, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            self.weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.weights is None:
            raise ValueError(
                f"the replay was to keep epoch {self.epoch}, but training ended before it"
            )
        self.model.set_weights(self.weights)


@dataclass
class TrainingResult:
    """A trained model with its history, its best epoch and the wall time in seconds.

    Parameters
    ----------
    model : keras.Model
        The trained network, with the weights early stopping restored.
    config : NetworkConfig
        Its configuration.
    history : dict of str to list of float
        Per-epoch ``loss`` and ``val_loss`` (PD units squared) and learning rate ``lr``.
    best_epoch : int
        The epoch (counted from 1) whose weights the model has: the one early stopping
        kept (:func:`restored_epoch`), or a replayed run's ``keep_epoch``.
    seconds : float
        Wall time of the training (s); for a model loaded from the store, that of the run
        that trained it.
    seed : int
        The seed it was trained from.
    epoch_seconds : list of float
        Wall time of each epoch (s); empty for a model loaded from the store.

    Examples
    --------
    See :func:`train_network`, which returns one.

    >>> TrainingResult.__dataclass_fields__.keys() >= {"model", "history", "best_epoch"}
    True
    """

    model: keras.Model
    config: NetworkConfig
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    seed: int
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        """The number of epochs trained."""
        return len(self.history["loss"])

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of an epoch (s)."""
        return self.seconds / self.epochs_run


def biomarker_mse(weights):
    """The loss of a network of K biomarkers: over each patient's observed entries, the
    mean of each biomarker's squared error times its weight (e.g. one over its training
    variance, so that every biomarker counts alike whatever its unit).

    Parameters
    ----------
    weights : array_like, (K,)
        One weight per biomarker, > 0.

    Returns
    -------
    callable
        ``loss(y_true, y_pred)`` for (N, T, K) tensors (NaN in ``y_true`` where not
        observed), returning (N,).

    Examples
    --------
    >>> loss = biomarker_mse([1.0, 0.25])
    >>> y = np.array([[[1.0, 2.0], [np.nan, 4.0]]])
    >>> float(loss(y, np.array([[[2.0, 4.0], [0.0, 4.0]]]))[0])  # (1 + 0.25 * 4 + 0) / 3
    0.6666666666666666
    """
    w = np.asarray(weights, "float32")
    if w.ndim != 1 or not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError(f"weights must be one finite weight > 0 per biomarker, got {weights!r}")

    def loss(y_true, y_pred):
        return _masked_mean_square(y_true, y_pred, axis=(-2, -1), weights=w)

    loss.__name__ = "biomarker_mse"
    return loss


def biomarker_weights(train_y) -> np.ndarray:
    """The loss weights of K biomarkers: the mean of their training variances over each
    one's variance, so that every biomarker counts alike whatever its unit, and the loss
    stays on the scale of a squared error in biomarker units (for biomarkers of equal
    variance it is the mean squared error), where early stopping's ``min_delta`` is set.

    Parameters
    ----------
    train_y : array_like, (N, T, K)
        Observed training targets (NaN where not observed).

    Returns
    -------
    numpy.ndarray, (K,)
        The weights, with ``sum(w * var) == sum(var)``.

    Examples
    --------
    >>> y = np.stack([np.arange(4.0).reshape(2, 2), 10 * np.arange(4.0).reshape(2, 2)], -1)
    >>> biomarker_weights(y).round(3).tolist()
    [50.5, 0.505]
    """
    y = np.asarray(train_y, float)
    if y.ndim != 3:
        raise ValueError(f"train_y must be (N, T, K) for K biomarkers, got shape {y.shape}")
    seen = ~np.isnan(y).all(axis=(0, 1))
    if not seen.all():
        raise ValueError(
            f"biomarker(s) {np.flatnonzero(~seen).tolist()} of train_y are never observed"
        )
    var = np.nanvar(y, axis=(0, 1))
    if not np.all(var > 0):
        raise ValueError(
            f"biomarker(s) {np.flatnonzero(var <= 0).tolist()} of train_y never vary: no "
            "scale to weigh them by"
        )
    return var.mean() / var


@keras.saving.register_keras_serializable(package="pkpd_lib")
def masked_mse(y_true, y_pred):
    """Mean squared error over the entries of ``y_true`` that are not NaN (per patient).

    Parameters
    ----------
    y_true : array_like or tensor, (N, T)
        Observed PD (biomarker units); NaN where not observed.
    y_pred : array_like or tensor, (N, T)
        Predicted PD.

    Returns
    -------
    tensor, (N,)
        Each patient's mean squared error over their observed entries (PD units
        squared); 0 for a patient with none.

    Examples
    --------
    >>> float(masked_mse(np.array([[1.0, np.nan]]), np.array([[3.0, 100.0]]))[0])
    4.0
    """
    return _masked_mean_square(y_true, y_pred, axis=-1)


def _masked_mean_square(y_true, y_pred, axis, weights=None):
    """The squared errors over the entries of ``y_true`` that are not NaN, summed over
    ``axis`` (each times its ``weights`` along the last axis, if given) and divided by
    the number of those entries (at least 1)."""
    ops = keras.ops
    seen = ops.logical_not(ops.isnan(y_true))
    err = ops.where(seen, y_pred - ops.where(seen, y_true, 0.0), 0.0)
    n_seen = ops.maximum(ops.sum(ops.cast(seen, y_pred.dtype), axis=axis), 1.0)
    square = err * err if weights is None else err * err * ops.cast(weights, y_pred.dtype)
    return ops.sum(square, axis=axis) / n_seen


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic.

    Op determinism stays on for the rest of the process.

    Parameters
    ----------
    seed : int
        The seed of all three generators.

    Examples
    --------
    >>> set_seed(3); a = np.random.random()
    >>> set_seed(3); a == np.random.random()
    True
    """
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def _check_targets(name: str, y: np.ndarray, x_name: str, x: Mapping) -> None:
    """``y`` must be (patients, times), or (patients, times, biomarkers) for two or
    more, with the patients and times of ``x``'s ``conc``."""
    if y.ndim == 3 and y.shape[2] < 2:
        raise ValueError(
            f"{name} has shape {y.shape}: give one biomarker as (patients, times), several "
            "as (patients, times, biomarkers)"
        )
    if y.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be (patients, times) or (patients, times, biomarkers), got shape "
            f"{y.shape}"
        )
    if (not isinstance(x, Mapping) and not hasattr(x, "columns")) or CONC_INPUT not in x:
        return  # check_inputs names what is wrong with x
    conc_shape = np.shape(x[CONC_INPUT])
    if len(conc_shape) == 2 and y.shape[:2] != conc_shape:
        raise ValueError(
            f"{name} has shape {y.shape} (patients, times) but {x_name}[{CONC_INPUT!r}] has "
            f"{conc_shape}: {name} must hold the PD of the same patients at the same times"
        )


def train_network(
    config: NetworkConfig,
    train_x: Mapping[str, np.ndarray],
    train_y: np.ndarray,
    val_x: Mapping[str, np.ndarray],
    val_y: np.ndarray,
    seed: int = 0,
    report_every: int | None = 10,
    label: str = "",
    replay: Replay | None = None,
) -> TrainingResult:
    """Build and train a network reproducibly from ``seed``.

    The inputs are scaled by the training data's statistics (:func:`scaling_stats`). Loss:
    mean squared error (:func:`masked_mse` if any target is NaN); for several biomarkers
    each one's squared error weighted by :func:`biomarker_weights` (:func:`biomarker_mse`),
    so that the loss keeps the biomarkers' units and ``config.min_delta`` its meaning. Adam,
    learning rate halved after ``max(config.patience // 3, 1)`` epochs without improvement (down to
    1e-5), early stopping after ``config.patience`` epochs without a decrease of the
    validation loss of at least ``config.min_delta``, with the weights of the last epoch
    that lowered it by that much restored (:func:`restored_epoch`). With the same seed,
    data and machine the weights are bit-identical. With ``replay``, a stored run's
    decisions are repeated instead: its learning rate per epoch, as many epochs, and the
    weights of its kept epoch.

    Parameters
    ----------
    config : NetworkConfig
        Architecture and training settings.
    train_x, val_x : mapping of str to array_like
        Training and validation inputs keyed by feature name (see :func:`check_inputs`):
        per step (N, T), static (N,).
    train_y, val_y : array_like, (N, T) and (M, T)
        Observed PD (biomarker units) of the same patients at the times of their inputs'
        ``conc``; NaN marks a time point without a PD observation. (N, T, K) and (M, T,
        K): K >= 2 biomarkers, one network for all (see :func:`build_network`).
    seed : int, default 0
        Seed of the weights and the shuffling (:func:`set_seed`).
    report_every : int or None, default 10
        Print a line every this many epochs (:class:`EpochReport`) and a closing summary;
        ``None`` or 0 prints nothing.
    label : str, default ""
        Text that starts each printed line.
    replay : Replay, optional
        The decisions of a stored run to repeat (the retrain tier's use); None decides.

    Returns
    -------
    TrainingResult
        The trained model, its history and timings.

    Raises
    ------
    ValueError
        If a target is not (N, T) like its inputs' ``conc``, the training and validation
        targets have different T, or a target holds inf or a patient with no
        observation; ``report_every`` is neither ``None``, 0 nor an integer >= 1
        (:class:`EpochReport`); or from :func:`check_inputs`, checked before the network
        is built: e.g. naming a static feature (``AGE``) or a per-step input of
        ``config`` (``time_h`` with ``time_input=True``) missing from ``train_x`` or
        ``val_x``.
    TypeError
        From :func:`check_inputs`, if the inputs are not a mapping.

    Examples
    --------
    >>> run = train_network(NetworkConfig(units=(2,), max_epochs=2), x, y, x, y,
    ...                     report_every=None)
    >>> run.epochs_run, len(run.history["val_loss"])
    (2, 2)
    """
    train_y, val_y = np.asarray(train_y, float), np.asarray(val_y, float)
    _check_targets("train_y", train_y, "train_x", train_x)
    _check_targets("val_y", val_y, "val_x", val_x)
    if val_y.shape[1] != train_y.shape[1]:
        raise ValueError(
            f"val_y has {val_y.shape[1]} time points and train_y {train_y.shape[1]}: the "
            "network has one time grid"
        )
    if val_y.shape[2:] != train_y.shape[2:]:
        raise ValueError(
            f"val_y has shape {val_y.shape} and train_y {train_y.shape}: they must hold the "
            "same biomarkers"
        )
    for name, y in (("train_y", train_y), ("val_y", val_y)):
        if np.isinf(y).any() or np.isnan(y).all(axis=1).any():
            raise ValueError(f"{name} must be finite, with at least one observation per patient")
    n_times = train_y.shape[1]
    # the inputs the network will have, checked before scaling and building need them
    expected = _expected_features(config, n_times)
    _check_features(expected, _default_name(config), train_x)
    _check_features(expected, _default_name(config), val_x)
    set_seed(seed)
    stats = scaling_stats(train_x, train_y, config.static_features)
    model = build_network(config, n_times, stats)
    tx, vx = check_inputs(model, train_x), check_inputs(model, val_x)
    masked = bool(np.isnan(train_y).any() or np.isnan(val_y).any())
    loss = masked_mse if masked else "mse"
    if train_y.ndim == 3:
        loss = biomarker_mse(biomarker_weights(train_y))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)
    timer = _EpochTimer()
    if replay is None:
        epochs = config.max_epochs
        callbacks = [
            timer,
            keras.callbacks.EarlyStopping(
                patience=config.patience, min_delta=config.min_delta, restore_best_weights=True
            ),
            keras.callbacks.ReduceLROnPlateau(
                factor=0.5, patience=max(config.patience // 3, 1), min_lr=1e-5
            ),
        ]
    else:
        rates = replay.learning_rates
        epochs = len(rates)
        callbacks = [
            timer,
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: rates[epoch]),
            _KeepEpoch(replay.keep_epoch),
        ]
    if report_every:
        callbacks.append(EpochReport(report_every, label))
    t0 = time.perf_counter()
    hist = model.fit(
        tx,
        np.asarray(train_y, "float32"),
        validation_data=(vx, np.asarray(val_y, "float32")),
        epochs=epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history.setdefault("lr", history.pop("learning_rate", []))
    if replay is None:
        best_epoch = restored_epoch(history["val_loss"], config.min_delta)
    else:
        best_epoch = replay.keep_epoch
    if report_every:
        print(
            f"{label}stopped after {len(history['loss'])} epochs; kept epoch {best_epoch}, "
            f"val_loss {history['val_loss'][best_epoch - 1]:.3f}",
            flush=True,
        )
    return TrainingResult(model, config, history, best_epoch, seconds, seed, timer.seconds)


def save_model(model: keras.Model, path: str | Path, overwrite: bool = False) -> Path:
    """Save to a ``.keras`` file (architecture, weights and scaling), atomically.

    The file is written beside ``path`` and renamed into place when complete, so an
    interrupted save never leaves a partial model. An existing file is replaced only
    with ``overwrite=True``.

    Parameters
    ----------
    model : keras.Model
        The network to save.
    path : str or pathlib.Path
        The file, ending in ``.keras``; missing folders are created.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.keras``.
    FileExistsError
        If ``path`` exists (or appears while it is written) and not ``overwrite``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = save_model(model, pathlib.Path(tempfile.mkdtemp()) / "m.keras")
    >>> model_features(load_model(path)) == model_features(model)
    True
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files must end in .keras, got {path.name!r}")
    with atomic_path(path, overwrite) as tmp:
        model.save(tmp)
    return path


def load_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` model with ``safe_mode=True`` (no arbitrary code is run).

    Parameters
    ----------
    path : str or pathlib.Path
        A file written by :func:`save_model` (or Keras), with this package's layers
        (:mod:`pkpd_lib.nets.node` is imported to register the ODE layers).

    Returns
    -------
    keras.Model
        The network, not compiled (compile it before training it further).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    pkpd_lib.files.DamagedFileError
        A ``ValueError`` that names the file, if it is truncated or damaged (an
        interrupted copy): empty, not a complete zip file, or a member fails its
        checksum.

    Examples
    --------
    >>> load_model("no/such/model.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no model file at no/such/model.keras
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    if path.stat().st_size == 0:
        raise DamagedFileError(f"{path} is empty (0 bytes): not a saved model")
    _check_zip(path)
    from . import node  # noqa: F401  (registers the ODE layers)

    return keras.saving.load_model(path, safe_mode=True, compile=False)


def _check_zip(path: Path) -> None:
    """Raise :class:`~pkpd_lib.files.DamagedFileError` naming ``path`` unless it is a
    complete zip file (a ``.keras`` model is one) whose members pass their checksums."""
    problem = None
    try:
        if not zipfile.is_zipfile(path):
            problem = "it does not end like a complete zip file"
        else:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                problem = f"its member {bad!r} fails its checksum"
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        problem = str(err)
    if problem:
        raise DamagedFileError(
            f"{path} is a truncated or damaged file, not a complete .keras model ({problem})"
        )


def config_to_json(config: NetworkConfig) -> str:
    """The configuration as JSON; the ODE fields are left out of an LSTM's (so models
    cached before they existed keep their fingerprints).

    Parameters
    ----------
    config : NetworkConfig
        The configuration.

    Returns
    -------
    str
        Its fields as a JSON object with sorted keys.

    Examples
    --------
    >>> config_to_json(NetworkConfig(units=(4,)))[:28]
    '{"batch_size": 32, "block": '
    >>> '"latent"' in config_to_json(NetworkConfig(units=(4,), block=1, kind="node"))
    True
    """
    d = asdict(config)
    for name in _HIDDEN_FIELDS[config.kind]:
        del d[name]
    return json.dumps(d, sort_keys=True)


# --- reproducible training with an on-disk cache --------------------------------------

#: Bumped when saved models change form (2: training ranges recorded; 3: data keyed
#: approximately; 4: data matched by signature, so that another CPU's numpy finds the
#: same model), so that older cached models are not reused.
MODEL_FORMAT = 4


#: The loss of a network of several biomarkers, part of its store key so that a network
#: trained with another loss is never found (the first weighed each biomarker by one over
#: its variance; this one by the mean variance over each one's, :func:`biomarker_weights`).
BIOMARKER_LOSS = "biomarker_mse, weights mean variance / variance"


def _fingerprint(config: NetworkConfig, seed: int, arrays) -> tuple[str, dict]:
    """The store key (configuration, seed, versions, format, the data's names and
    shapes, and for several biomarkers :data:`BIOMARKER_LOSS`) and the data's
    :func:`~pkpd_lib.files.data_signature`, which a stored model must match within
    :data:`~pkpd_lib.files.SIGNATURE_RTOL`."""
    names = ("train_x", "train_y", "val_x", "val_y")
    signature = data_signature(dict(zip(names, arrays, strict=True)))
    h = hashlib.sha256()
    h.update(config_to_json(config).encode())
    h.update(f"seed={seed};keras={keras.__version__};tf={tf.__version__}".encode())
    h.update(f"format={MODEL_FORMAT};{signature_structure(signature)}".encode())
    if np.ndim(arrays[1]) == 3:
        h.update(f";loss={BIOMARKER_LOSS}".encode())
    return h.hexdigest()[:16], signature


def train_or_load(
    config: NetworkConfig,
    train_x,
    train_y,
    val_x,
    val_y,
    seed: int = 0,
    cache_dir: str | Path | None = "default",
    report_every: int | None = 10,
    label: str = "",
) -> TrainingResult:
    """:func:`train_network`, or the identical model trained earlier with the same
    configuration, seed, data and library versions, loaded from ``cache_dir``.

    Training is deterministic, so a cached model is the model this call would train; the
    cache only saves time when several chapters need the same model. ``cache_dir``:
    ``"default"`` is :func:`default_cache_dir`; ``None`` always trains. Processes that
    need the same model at once (notebooks run side by side) train it once: the others
    wait for it and load it (:func:`~pkpd_lib.files.exclusive_lock`); a stored model is
    read without the lock, so a read-only store works. With ``$PKPD_CACHE_MISS=error``
    (the book's test command) a model missing from the default store raises
    :class:`StoreMissError` instead of training: the committed networks must be the ones
    the book's outputs came from. A stored model or metadata file that is truncated or
    damaged is trained again (with a warning naming it), or with
    ``$PKPD_CACHE_MISS=error`` raises :class:`~pkpd_lib.files.DamagedFileError` naming it.

    Parameters
    ----------
    config, train_x, train_y, val_x, val_y, seed, report_every, label
        As for :func:`train_network`.
    cache_dir : str, pathlib.Path or None, default "default"
        The store's folder; ``"default"`` is :func:`default_cache_dir` (the only store
        that ``$PKPD_CACHE_MISS`` applies to); ``None`` always trains and stores nothing.

    Returns
    -------
    TrainingResult
        The trained or loaded model; a loaded one has the history and wall time of the
        run that trained it and no ``epoch_seconds``.

    Raises
    ------
    pkpd_lib.files.StoreMissError
        With ``$PKPD_CACHE_MISS=error``, if the model is missing from the default store.
    pkpd_lib.files.DamagedFileError
        With ``$PKPD_CACHE_MISS=error``, if its stored file is truncated or damaged.
    ValueError
        With ``cache_dir="default"``, if ``$PKPD_CACHE_MISS`` is neither ``"compute"``
        nor ``"error"`` or ``$PKPD_MODEL_CACHE`` is set but empty; or from
        :func:`train_network` when it trains (as is its ``TypeError``).
    TimeoutError
        If another process holds the model's lock for longer than
        :data:`~pkpd_lib.files.LOCK_TIMEOUT_S` seconds.

    Warns
    -----
    UserWarning
        Naming a damaged stored file that is trained again.

    Examples
    --------
    >>> import tempfile
    >>> cache = tempfile.mkdtemp()
    >>> config = NetworkConfig(units=(2,), max_epochs=2)
    >>> a = train_or_load(config, x, y, x, y, cache_dir=cache, report_every=None)
    >>> b = train_or_load(config, x, y, x, y, cache_dir=cache, report_every=None)
    >>> a.history == b.history
    True
    """
    if cache_dir is None:
        return train_network(config, train_x, train_y, val_x, val_y, seed, report_every, label)
    key, signature = _fingerprint(config, seed, (train_x, train_y, val_x, val_y))
    prefix = f"{config.label}_seed{seed}_{key}"
    record, strict = locate_stored(cache_dir, prefix, signature)
    folder, path = record.parent, record.with_suffix(".keras")
    note_use(path)
    if _stored(path):  # complete files (written atomically): no lock needed to read them
        try:
            stored = _load_stored(path, config, seed, report_every, label)
        except DamagedFileError as err:
            if strict:
                raise DamagedFileError(
                    f"{label}{err}; $PKPD_CACHE_MISS=error forbids training network "
                    f"{config.label} (seed {seed}) again: restore the store's file (git "
                    "checkout) or re-execute the chapters (python3 tools/tasks.py execute)"
                ) from err
        else:
            xy = (train_x, train_y, val_x, val_y)
            _retrain_and_compare(path, stored, config, xy, seed, label, signature)
            return stored
    elif strict:
        raise StoreMissError(
            f"{label}network {config.label} (seed {seed}) is not in the store "
            f"{folder} (key {key}) and $PKPD_CACHE_MISS=error forbids training it: "
            "its data, configuration or library versions changed. Re-execute the "
            "chapters (python3 tools/tasks.py execute) to train and store it."
        )
    with exclusive_lock(folder / f"{prefix}.lock"):
        return _train_or_load_locked(
            path, config, train_x, train_y, val_x, val_y, seed, report_every, label, signature
        )


def _retrain_and_compare(path, stored, config, xy, seed, label, signature):
    """In a shard of the retrain tier (:func:`pkpd_lib.files.retrain_here`), train the
    stored network ``path`` again from the same data and seed, repeating the stored run's
    decisions (:class:`Replay`: its learning rate per epoch and its kept epoch), store it
    in the shard's folder and report how far its predictions on the validation inputs
    are from the stored network's: the largest difference as a fraction of the stored
    predictions' RMS, within :data:`~pkpd_lib.reproducibility.RETRAIN_RTOL`. Whether
    early stopping's decisions repeat (:func:`early_stopping` of the new validation
    losses against the stored kept epoch and epochs run; the learning-rate schedule's
    are not checked) is reported beside it, not judged: near a tie of two validation
    losses they may flip on another machine's arithmetic."""
    fresh_path = retrain_here(path.with_suffix(".json"))
    if fresh_path is None:
        return
    fresh_path = fresh_path.with_suffix(".keras")
    fresh_path.parent.mkdir(parents=True, exist_ok=True)
    replay = Replay.of(stored)
    with exclusive_lock(fresh_path.with_suffix(".lock")):
        if _stored(fresh_path):
            return  # another notebook of this shard trained it already
        # no training log, and warnings to the report: the notebook's stored outputs
        # come from the stored network
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fresh = _train_or_load_locked(
                fresh_path, config, *xy, seed, 0, label, signature, replay
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputRangeWarning)
        before = predict_pd(stored.model, xy[2])
        after = predict_pd(fresh.model, xy[2])
    scale = float(np.sqrt(np.nanmean(before**2))) or 1.0
    difference = float(np.nanmax(np.abs(after - before))) / scale
    report_retrained(
        path.with_suffix(".json"),
        "network",
        fresh.seconds,
        caught,
        statistic="largest change of the validation predictions / their RMS, "
        "the stored run's decisions replayed",
        difference=difference,
        tolerance=RETRAIN_RTOL,
        within=bool(difference <= RETRAIN_RTOL),
        best_epoch=[stored.best_epoch, fresh.best_epoch],
        decision_repeats=bool(
            early_stopping(fresh.history["val_loss"], config.min_delta, config.patience)
            == (stored.best_epoch, stored.epochs_run)
        ),
    )


def _stored(path: Path) -> bool:
    """Whether the model ``path`` and its metadata (``.json`` beside it) both exist."""
    return path.is_file() and path.with_suffix(".json").is_file()


def _read_meta(meta: Path) -> dict:
    """The metadata of a stored model; :class:`~pkpd_lib.files.DamagedFileError` naming
    the file if it is empty, truncated or lacks an entry."""
    try:
        info = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFileError(
            f"{meta} is a truncated or damaged file, not the metadata of a stored model ({err})"
        ) from None
    needed = ("history", "best_epoch", "seconds", "epochs_run")
    if not isinstance(info, dict) or any(k not in info for k in needed):
        raise DamagedFileError(f"{meta} is damaged: it lacks the entries {list(needed)}")
    return info


def _load_stored(path: Path, config, seed, report_every, label) -> TrainingResult:
    info = _read_meta(path.with_suffix(".json"))
    _check_zip(path)
    if report_every:
        print(f"{label}loaded the model trained earlier ({info['epochs_run']} epochs)")
    # stores written before the rule was recorded hold the epoch of the lowest validation
    # loss; the kept epoch follows from their history
    if "best_epoch_rule" in info:
        kept = int(info["best_epoch"])
    else:
        kept = restored_epoch(info["history"]["val_loss"], config.min_delta)
    return TrainingResult(load_model(path), config, info["history"], kept, info["seconds"], seed)


def _train_or_load_locked(
    path, config, train_x, train_y, val_x, val_y, seed, report_every, label, signature, replay=None
):
    meta = path.with_suffix(".json")
    if _stored(path):
        try:
            return _load_stored(path, config, seed, report_every, label)
        except DamagedFileError as err:
            warnings.warn(f"{label}{err}: training the model again", stacklevel=3)
    result = train_network(
        config, train_x, train_y, val_x, val_y, seed, report_every, label, replay
    )
    save_model(result.model, path, overwrite=True)
    write_text_atomic(
        meta,
        json.dumps(
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_epoch_rule": "kept" if replay is None else "replayed",
                "seconds": result.seconds,
                "epochs_run": result.epochs_run,
                "config": asdict(config),
                "seed": seed,
                "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
                "signature": signature,
            }
        ),
        overwrite=True,
    )
    return result
