"""The neural ODE layers and their integrator, against known answers."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from pkpd_lib.nets import networks as nw
from pkpd_lib.nets.node import NeuralODE, TurnoverUDE, integrate_rk4

A = np.array([[-0.5, 0.2], [0.1, -0.3]])
B = np.array([[1.0], [0.5]])


def _linear_rhs(y, u):
    return y @ A.T + u @ B.T


def _scipy_reference(y0, u_grid, jumps=None):
    """scipy's solution of y' = A y + B u(t), u linear between grid points (1 h apart),
    with the jumps added at the grid points."""
    times = np.arange(u_grid.shape[0], dtype=float)
    out = [y0 + (0 if jumps is None else jumps[0])]
    for k in range(len(times) - 1):

        def f(t, y, k=k):
            w = t - times[k]
            u = (1 - w) * u_grid[k] + w * u_grid[k + 1]
            return A @ y + B @ u

        sol = solve_ivp(f, (times[k], times[k + 1]), out[-1], rtol=1e-11, atol=1e-12)
        nxt = sol.y[:, -1] + (0 if jumps is None else jumps[k + 1])
        out.append(nxt)
    return np.array(out)


def test_rk4_matches_the_matrix_exponential_without_input():
    y0 = np.array([[1.0, -2.0]])
    y = integrate_rk4(_linear_rhs, y0, np.zeros((6, 1, 1))).numpy()[:, 0]
    exact = np.array([expm(A * t) @ y0[0] for t in range(6)])
    np.testing.assert_allclose(y, exact, atol=2e-3)
    finer = integrate_rk4(_linear_rhs, y0, np.zeros((6, 1, 1)), substeps=4).numpy()[:, 0]
    # fourth order: four sub-steps cut the error by about 4**4
    assert np.abs(finer - exact).max() < np.abs(y - exact).max() / 100


def test_rk4_matches_scipy_with_an_interpolated_input_and_jumps():
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 2, size=(9, 1))
    jumps = np.zeros((9, 2))
    jumps[3] = [1.5, 0.0]  # a dose into the first state at 3 h
    reference = _scipy_reference(np.array([0.2, 0.1]), u, jumps)
    y = integrate_rk4(
        _linear_rhs,
        np.array([[0.2, 0.1]]),
        u[:, None, :],
        substeps=4,
        jumps=jumps[:, None, :],
    ).numpy()[:, 0]
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-7)


def test_rk4_integrates_many_patients_at_once():
    y0 = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    u = np.zeros((4, 3, 1))
    together = integrate_rk4(_linear_rhs, y0, u).numpy()
    for i in range(3):
        alone = integrate_rk4(_linear_rhs, y0[i : i + 1], u[:, i : i + 1]).numpy()
        np.testing.assert_allclose(together[:, i], alone[:, 0], rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"substeps": 0}, "substeps"),
        ({"step_h": -1.0}, "step_h"),
    ],
)
def test_rk4_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        integrate_rk4(_linear_rhs, np.zeros((1, 2)), np.zeros((3, 1, 1)), **kwargs)


def test_rk4_names_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(T, N, F\)"):
        integrate_rk4(_linear_rhs, np.zeros((1, 2)), np.zeros((3, 1)))


@pytest.fixture(scope="module")
def tiny_xy():
    rng = np.random.default_rng(0)
    x = {
        "conc": rng.random((6, 10)),
        "BASE_PD": np.full(6, 100.0),
        "WT": np.linspace(50, 100, 6),
        "AGE": np.linspace(20, 70, 6),
        "SEX": np.array([0.0, 1, 0, 1, 0, 1]),
    }
    y = 100 + rng.random((6, 10))
    return x, y


@pytest.mark.parametrize("kind", ["node", "ude"])
def test_ode_networks_train_save_and_load_identically(kind, tiny_xy, tmp_path):
    x, y = tiny_xy
    config = nw.NetworkConfig(kind=kind, units=(4,), latent=2, block=1, max_epochs=2)
    run = nw.train_network(config, x, y, x, y, report_every=None)
    before = nw.predict_pd(run.model, x)
    assert before.shape == (6, 10) and np.isfinite(before).all()
    path = nw.save_model(run.model, tmp_path / f"{kind}.keras")
    after = nw.predict_pd(nw.load_model(path), x)
    np.testing.assert_array_equal(before, after)


def test_untrained_ode_networks_start_at_baseline(tiny_xy):
    """Zero-initialised derivative outputs: before training, the UDE's biomarker stays at
    each patient's baseline whatever the concentration."""
    x, y = tiny_xy
    config = nw.NetworkConfig(kind="ude", units=(4,), latent=2, block=1)
    model = nw.build_network(config, 10, nw.scaling_stats(x, y))
    pd_ = nw.predict_pd(model, x)
    np.testing.assert_allclose(pd_, np.broadcast_to(x["BASE_PD"][:, None], pd_.shape), rtol=1e-5)


def test_ude_learns_a_positive_kout():
    layer = TurnoverUDE(latent=2, hidden=4, kout0_per_h=0.05)
    layer.build((None, 5, 3))
    assert layer.kout_per_h == pytest.approx(0.05)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: NeuralODE(substeps=1.5), "substeps must be an integer >= 1, got 1.5"),
        (lambda: NeuralODE(substeps=0), "substeps must be an integer >= 1, got 0"),
        (lambda: NeuralODE(latent=0), "latent must be an integer >= 1, got 0"),
        (lambda: NeuralODE(hidden=2.5), "hidden must be an integer >= 1, got 2.5"),
        (lambda: NeuralODE(step_h=0.0), "step_h must be a finite number > 0, got 0.0"),
        (lambda: TurnoverUDE(kout0_per_h=0.0), r"kout0_per_h must be .* > 0 .*got 0.0"),
        (lambda: TurnoverUDE(kout0_per_h=-0.1), r"kout0_per_h must be .* > 0 .*got -0.1"),
        (lambda: TurnoverUDE(kout0_per_h=np.nan), "kout0_per_h must be a finite number"),
        (lambda: TurnoverUDE(substeps=1.5), "substeps must be an integer >= 1, got 1.5"),
    ],
)
def test_ode_layers_refuse_bad_settings_when_built(make, message):
    """Before: substeps=1.5 was truncated to 1 and kout0_per_h <= 0 became log(0) or NaN."""
    with pytest.raises(ValueError, match=message):
        make()


def test_neural_ode_output_shape():
    layer = NeuralODE(latent=3, hidden=4)
    out = layer(np.zeros((2, 7, 5), "float32"))
    assert tuple(out.shape) == (2, 7, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "gru"}, "kind must be one of"),
        ({"kind": "node", "block": 4}, "block=1"),
        ({"kind": "node", "block": 1, "units": (8, 8)}, "one entry in units"),
    ],
)
def test_network_config_checks_ode_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nw.NetworkConfig(**kwargs)


def test_lstm_fingerprints_do_not_change_with_the_ode_fields():
    assert "kind" not in nw.config_to_json(nw.NetworkConfig())
    assert "kind" not in repr(nw.NetworkConfig())
    assert "latent=3" in repr(nw.NetworkConfig(kind="ude", block=1, units=(8,), latent=3))
    assert '"kind": "node"' in nw.config_to_json(
        nw.NetworkConfig(kind="node", block=1, units=(16,))
    )


def test_rk4_refuses_no_time_points_and_jumps_of_another_shape():
    with pytest.raises(ValueError, match="no time points"):
        integrate_rk4(_linear_rhs, np.zeros((1, 2)), np.zeros((0, 1, 1)))
    one_state = lambda y, u: -0.5 * y  # noqa: E731
    with pytest.raises(ValueError, match=r"jumps must be \(T, N, D\) = \(4, 2, 1\).*\(4, 2, 3\)"):
        integrate_rk4(one_state, np.zeros((2, 1)), np.zeros((4, 2, 1)), jumps=np.ones((4, 2, 3)))
    with pytest.raises(ValueError, match="jumps must be"):
        integrate_rk4(one_state, np.zeros((2, 1)), np.zeros((4, 2, 1)), jumps=np.ones((4, 2)))
