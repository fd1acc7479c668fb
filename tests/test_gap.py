"""The spectral-gap summary: dense against matrix-free, outliers, batching, Thm 2 at moderate T."""

import math

import pytest
import torch

from gapscope.ensembles import LAWS, entry_law, random_markov
from gapscope.linalg import MatrixFreeOperator, spectral_gap
from gapscope.theory import scaled_second_eigenvalue, scaled_second_singular_value


def test_matrix_free_summary_matches_dense():
    A = random_markov(600, "exponential", generator=11)
    dense = spectral_gap(A)
    free = spectral_gap(MatrixFreeOperator.from_dense(A), k=4)
    assert bool(free.converged)
    for name in ("s1", "s2", "abs_lambda1", "abs_lambda2"):
        assert float(getattr(free, name)) == pytest.approx(float(getattr(dense, name)), rel=1e-6)
    # Hutchinson estimate of ||A^perp||_F^2 with 32 probes: relative error ~ sqrt(4/(32 T))
    assert float(free.sigma2) == pytest.approx(float(dense.sigma2), rel=5 * math.sqrt(4 / (32 * 600)))
    assert free.to_dict()["singular_outliers"] == pytest.approx(dense.to_dict()["singular_outliers"])


def test_markov_matrix_has_exactly_one_outlier_each_way():
    gap = spectral_gap(random_markov(800, "exponential", generator=0))
    assert int(gap.singular_outliers().sum()) == 1
    assert int(gap.eigen_outliers().sum()) == 1
    assert float(gap.abs_lambda1) == pytest.approx(1.0, abs=1e-12)
    summary = gap.to_dict()
    assert summary["sqrt_T_s2"] == pytest.approx(math.sqrt(800) * summary["s2"])
    assert summary["gap_ratio"] == pytest.approx(summary["s1"] / summary["s2"])


def test_planted_outliers_are_counted():
    """A block-structured Markov matrix has one extra eigenvalue/singular outlier per block."""
    T = 400
    A = random_markov(T, "exponential", generator=1)
    blocks = torch.zeros((T, T), dtype=torch.float64)
    blocks[: T // 2, : T // 2] = 1.0 / (T // 2)
    blocks[T // 2 :, T // 2 :] = 1.0 / (T // 2)
    gap = spectral_gap(0.5 * A + 0.5 * blocks, sigma2=0.25)
    assert int(gap.eigen_outliers().sum()) == 2
    assert int(gap.singular_outliers().sum()) == 2


def test_given_sigma2_sets_the_edges():
    gap = spectral_gap(random_markov(100, generator=0), sigma2=4.0)
    assert gap.sigma2_source == "given"
    assert float(gap.singular_edge) == pytest.approx(2 * 2 / 10)
    assert float(gap.eigen_edge) == pytest.approx(2 / 10)


def test_batched_summary_indexes_like_single_ones():
    A = random_markov(50, batch_shape=(3,), generator=4)
    batched = spectral_gap(A)
    assert batched.s2.shape == (3,)
    for i in range(3):
        assert batched[i].to_dict() == spectral_gap(A[i]).to_dict()
    with pytest.raises(ValueError, match="unbatched"):
        batched.to_dict()


LIGHT_TAILED = [(name, 2.0 if name == "gamma" else None) for name in LAWS if name != "lognormal"]


@pytest.mark.parametrize(
    ("law", "sigma2", "T", "edge_tol"),
    [(law, s2, 1000, 0.04) for law, s2 in LIGHT_TAILED]
    + [("lognormal", 0.25, 1000, 0.04), ("lognormal", 1.0, 1000, 0.15)]
    + [pytest.param(law, s2, 2000, 0.03, marks=pytest.mark.slow) for law, s2 in LIGHT_TAILED],
)
def test_theorem_2(law, sigma2, T, edge_tol):
    """sqrt(T) s2 -> 2 sigma and sqrt(T)|lambda2| -> sigma (SPEC section 4 table).

    Tolerances from SPEC's own draws: ~3% on the singular edge for light tails at T >= 1000
    and 15% for lognormal sigma^2 = 1; 7% on the eigenvalue edge (one extreme of a disc
    of T points); 3% on the mean square, whose relative error is O(1/sqrt(T))."""
    spec = entry_law(law, sigma2)
    gap = spectral_gap(random_markov(T, spec, generator=2024))
    assert float(gap.s1) == pytest.approx(1 + spec.sigma2 / (2 * T), abs=0.2 * spec.sigma2 / T + 1e-4)
    assert float(gap.sqrt_T_s2) == pytest.approx(scaled_second_singular_value(spec.sigma2), rel=edge_tol)
    assert float(gap.sqrt_T_abs_lambda2) == pytest.approx(scaled_second_eigenvalue(spec.sigma2), rel=0.07)
    assert float(gap.sigma2) == pytest.approx(spec.sigma2, rel=0.03)


def test_heavy_tailed_lognormal_edge_converges_slowly():
    """SPEC section 4: lognormal sigma^2 = 4 gives sqrt(T) s2 ~ 7.2, not 4, at T = 1000,
    while the bulk mean square is right. gapscope reports it as outliers."""
    gap = spectral_gap(random_markov(1000, "lognormal", 4.0, generator=0))
    assert float(gap.sqrt_T_s2) > 1.4 * 4.0
    assert float(gap.sigma2) == pytest.approx(4.0, rel=0.1)


def test_row_sum_check_counts_the_entries_each_sum_adds():
    """Each entry of A 1 adds T numbers, so its rounding grows with T: a float32 operator whose rows
    are off by 3e-6 (SmolLM2's heads at T = 4096 were off by 2.2e-6) passes, one off by 1% is refused
    after its first product."""
    g = torch.Generator().manual_seed(0)
    M = random_markov(1024, generator=g).float()
    slightly_off = MatrixFreeOperator.from_dense(M * (1 + 3e-6))
    assert spectral_gap(slightly_off, k=2, tol=1e-3).converged.all()
    scaled = MatrixFreeOperator.from_dense(M * 1.01)
    with pytest.raises(ValueError, match="rows summing to 1"):
        spectral_gap(scaled, k=2, tol=1e-6)
    assert scaled.counts.right == 1
