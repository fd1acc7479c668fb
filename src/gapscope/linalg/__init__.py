"""Numerics on torch tensors: spectra (dense and matrix-free), the spectral gap, and
collapse metrics of token representations. Batched over leading dimensions."""

from gapscope.linalg.attention import attention_operator
from gapscope.linalg.gap import FIXES, SpectralGap, causal_uniform, remove_gap, seen_by_values, spectral_gap
from gapscope.linalg.metrics import (
    StableRank,
    collapse_metrics,
    composite_norm,
    covariance_stable_rank,
    dong_residual,
    effective_rank,
    hfc_lfc_ratio,
    high_frequency,
    mean_cosine_similarity,
    noci_measure,
    stable_rank,
)
from gapscope.linalg.operator import MatrixFreeOperator, ProductCounts, TopK, as_operator
from gapscope.linalg.spectra import (
    eigenvalues,
    singular_values,
    top_eigenvalues,
    top_singular_values,
)

__all__ = [
    "FIXES",
    "causal_uniform",
    "remove_gap",
    "seen_by_values",
    "MatrixFreeOperator",
    "ProductCounts",
    "SpectralGap",
    "StableRank",
    "TopK",
    "as_operator",
    "attention_operator",
    "collapse_metrics",
    "composite_norm",
    "covariance_stable_rank",
    "dong_residual",
    "effective_rank",
    "eigenvalues",
    "hfc_lfc_ratio",
    "high_frequency",
    "mean_cosine_similarity",
    "noci_measure",
    "singular_values",
    "spectral_gap",
    "stable_rank",
    "top_eigenvalues",
    "top_singular_values",
]
