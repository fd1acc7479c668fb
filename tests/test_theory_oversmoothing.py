"""The dominance rule and the closed form of Record Straight (SPEC section 10)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gapscope.ensembles import INSTANCE_ATTENTIONS, VALUE_SPECTRA, oversmoothing_instance
from gapscope.experiments import shipped_experiments
from gapscope.sweep import measure_table
from gapscope.theory import closed_form, dominance, iterate, predict, update_eigenvalues


def instance(attention="generic", spectrum="gaussian", seed=0, n=12, d=6):
    return [t.numpy() for t in oversmoothing_instance(n, d, attention, spectrum, generator=seed)]


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("spectrum", sorted(VALUE_SPECTRA))
def test_closed_form_equals_direct_iteration(spectrum, residual):
    A, B, X0 = instance("generic", spectrum, seed=3)
    xs = iterate(A, B, X0, 40, residual=residual)
    for steps in (0, 1, 7, 40):
        X, s = closed_form(A, B, X0, steps, residual=residual)
        reference = xs[steps]
        assert np.abs(X * np.exp(s) - reference).max() <= 1e-10 * np.abs(reference).max()


def test_closed_form_reaches_ten_million_steps_in_log_space():
    A, B, X0 = instance("reversible", "real", seed=1)
    X, s = closed_form(A, B, X0, 10**7)
    rule = dominance(np.linalg.eigvals(A), np.linalg.eigvals(B))
    assert np.all(np.isfinite(X)) and np.abs(X).max() > 0
    assert s == pytest.approx(10**7 * np.log(rule.modulus), rel=1e-12)


def test_update_eigenvalues_are_those_of_the_kronecker_update():
    A, B, _ = instance("generic", "gaussian", seed=2, n=5, d=3)
    H = B.T
    dense = np.linalg.eigvals(np.eye(15) + np.kron(H, A))
    ours = update_eigenvalues(np.linalg.eigvals(A), np.linalg.eigvals(B)).ravel()
    assert np.allclose(np.sort_complex(dense), np.sort_complex(ours), atol=1e-10)


def test_corollaries_and_tied_multiplicities():
    lam_A = [1.0, 0.4, -0.3, 0.1]
    assert dominance(lam_A, [0.5, 0.2]).regime == "input_convergence"  # Cor. 3, smoothing
    sharp = dominance(lam_A, [-0.9, -0.2])
    assert sharp.regime == "rank_collapse_only" and sharp.pairs == ((0, 2),)  # Cor. 3, sharpening
    assert dominance(lam_A, [-0.9, -0.2], residual=False).regime == "input_convergence"  # Cor. 1
    ties = dominance([1.0, -0.5, -0.5, 0.1], [-1.5, -1.5, 0.3])  # Thm 3 (3b)
    assert ties.regime == "no_rank_collapse" and ties.limit_rank == 2 and ties.growth == "explodes"
    assert dominance([1.0, 0.2], [-0.5]).growth == "vanishes"
    complex_pair = dominance([1.0, -0.4 + 0.3j, -0.4 - 0.3j], [-0.8])
    assert complex_pair.regime == "rank_collapse_only" and complex_pair.oscillates


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=2, max_size=6),
    st.lists(st.floats(-3, 3), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
)
def test_the_rule_ignores_the_order_of_eigenvalues(lam_A, lam_H, rng):
    lam_A = [1.0, *lam_A]
    first = dominance(lam_A, lam_H)
    shuffled_A, shuffled_H = lam_A[:], lam_H[:]
    rng.shuffle(shuffled_A)
    rng.shuffle(shuffled_H)
    second = dominance(shuffled_A, shuffled_H)
    assert (first.regime, first.limit_rank, first.growth) == (second.regime, second.limit_rank, second.growth)
    assert first.modulus == second.modulus and len(first.pairs) == len(second.pairs)


def test_the_rule_agrees_with_iterated_updates_on_800_instances():
    experiment = shipped_experiments()["regime.prediction"]
    assert experiment.grid["attention"] == list(INSTANCE_ATTENTIONS)
    assert experiment.grid["value_spectrum"] == list(VALUE_SPECTRA)
    rows = measure_table(experiment, "paper").to_dict("records")
    assert len(rows) == 800
    disagreements = [row for row in rows if not row["agree"]]
    assert not disagreements, disagreements[:3]
    regimes = {row["predicted_regime"] for row in rows}
    assert {"input_convergence", "rank_collapse_only"} <= regimes
    assert any(row["predicted_oscillates"] for row in rows)


def test_a_wrong_prediction_is_caught():
    A, B, X0 = instance("reversible", "sharpening", seed=4)
    prediction = predict(A, B)
    assert prediction.dominance.regime == "rank_collapse_only"
    smoothed = predict(A, -B)  # eig(-B) in (0, 1]: smoothing
    assert smoothed.dominance.regime == "input_convergence" and smoothed.hfc_lfc == 0.0
    X, _ = closed_form(A, B, X0, prediction.dominance.steps_to_converge(1e12))
    mean = X.mean(axis=0)
    assert np.linalg.norm(X - mean) / (np.sqrt(len(X)) * np.linalg.norm(mean)) == pytest.approx(
        prediction.hfc_lfc, rel=1e-5
    )


def test_bad_inputs_name_the_argument():
    A, B, X0 = instance()
    with pytest.raises(ValueError, match="A must be a square matrix"):
        predict(A[:, :3], B)
    with pytest.raises(ValueError, match="X0 must have shape"):
        closed_form(A, B, X0.T, 3)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        closed_form(A, B, X0, -1)
    with pytest.raises(ValueError, match="lam_H must be a non-empty vector"):
        dominance([1.0], [])
    with pytest.raises(ValueError, match="not diagonalisable"):
        closed_form(A, np.eye(6) + np.eye(6, k=1), X0, 3)  # a Jordan block
