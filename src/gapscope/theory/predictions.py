"""Closed-form predictions of Mind the Gap, one function per statement (SPEC sections 3-8).

Each docstring names the SPEC section and the paper statement it implements. All
functions take plain floats (numpy/scipy only) and validate their arguments.
"""

from __future__ import annotations

import math

from gapscope._checks import check_choice, check_int, check_positive
from gapscope.theory.laws import FreeMPProduct, fuss_catalan

# --- section 3: key-query attention at initialisation --------------------------------------


def key_query_tau2(std_q: float, std_k: float, token_norm: float = 1.0) -> float:
    """Variance tau^2 = r^4 sigma_Q^2 sigma_K^2 of the logits <q_i, k_j>/sqrt(dk) (SPEC section 3, fact 1)."""
    std_q = check_positive(std_q, "std_q")
    std_k = check_positive(std_k, "std_k")
    r = check_positive(token_norm, "token_norm")
    return r**4 * std_q**2 * std_k**2


def key_query_sigma2(tau2: float, dk: int | None = None) -> float:
    """Normalised variance of exp(S) for key-query logits (SPEC section 3, fact 3; Prop. 1).

    Exact for finite dk: (1 - 4 tau^2/dk)^{-dk/2} (1 - tau^2/dk)^{dk} - 1, which needs
    dk > 4 tau^2; the limit dk -> infinity (``dk=None``) is e^{tau^2} - 1.
    """
    tau2 = check_positive(tau2, "tau2")
    if dk is None:
        return math.expm1(tau2)
    dk = check_int(dk, "dk", minimum=1)
    if dk <= 4 * tau2:
        raise ValueError(f"dk must exceed 4 tau2 = {4 * tau2:.6g} for a finite variance, got {dk}")
    log_ratio = -dk / 2 * math.log1p(-4 * tau2 / dk) + dk * math.log1p(-tau2 / dk)
    return math.expm1(log_ratio)


def key_query_fourth_moment_finite(tau2: float, dk: int) -> bool:
    """E exp(S)^4 < infinity exactly when dk > 16 tau^2 (SPEC section 3, fact 2)."""
    return check_int(dk, "dk", minimum=1) > 16 * check_positive(tau2, "tau2")


# --- section 4: the spectral gap -----------------------------------------------------------


def top_singular_value(sigma2: float, T: int) -> float:
    """Finite-T prediction s_1(A) ~ 1 + sigma^2 / (2T) (SPEC section 4, derived; Thm 2 limit 1)."""
    sigma2 = check_positive(sigma2, "sigma2")
    return 1.0 + sigma2 / (2 * check_int(T, "T", minimum=2))


def scaled_second_singular_value(sigma2: float) -> float:
    """Limit of sqrt(T) s_2(A): 2 sigma (Mind the Gap, Thm 2; SPEC section 4)."""
    return 2.0 * math.sqrt(check_positive(sigma2, "sigma2"))


def scaled_second_eigenvalue(sigma2: float) -> float:
    """Limit of sqrt(T) |lambda_2(A)|: the circular-law radius sigma (SPEC section 4)."""
    return math.sqrt(check_positive(sigma2, "sigma2"))


def product_scaled_second_singular_value(sigma2: float, layers: int) -> float:
    """Limit of T^{l/2} s_2(A_l...A_1): sigma^l sqrt((l+1)^{l+1} / l^l) (Lemma 2; SPEC section 4)."""
    sigma2 = check_positive(sigma2, "sigma2")
    l = check_int(layers, "layers", minimum=1)
    return sigma2 ** (l / 2) * math.sqrt((l + 1) ** (l + 1) / l**l)


def predicted_gap_summary(sigma2: float, T: int) -> dict[str, float]:
    """What Mind the Gap's Thm 2 predicts for one T x T Random Markov matrix of normalised
    variance sigma^2 (SPEC section 4), keyed like :meth:`gapscope.linalg.SpectralGap.to_dict`.

    The top singular value is 1 + sigma^2/(2T) and the top eigenvalue is exactly 1; the bulk
    sits at the 1/sqrt(T) scale, with sqrt(T) s_2 -> 2 sigma (quarter-circle edge) and
    sqrt(T) |lambda_2| -> sigma (circular-law radius). Hence the gap ratio
    s_1/s_2 ~ sqrt(T) / (2 sigma), and exactly one outlier in each spectrum.
    """
    sigma2 = check_positive(sigma2, "sigma2")
    T = check_int(T, "T", minimum=2)
    return {
        "s1": top_singular_value(sigma2, T),
        "sqrt_T_s2": scaled_second_singular_value(sigma2),
        "abs_lambda1": 1.0,
        "sqrt_T_abs_lambda2": scaled_second_eigenvalue(sigma2),
        "sigma2": sigma2,
        "gap_ratio": math.sqrt(T) / scaled_second_singular_value(sigma2),
        "singular_outliers": 1,
        "eigen_outliers": 1,
    }


# --- section 6: rank collapse in width ----------------------------------------------------


def width_collapse_constant(layers: int, gamma: float = 1.0, sigma2: float = 1.0) -> float:
    """C_l = sigma^{4l} (1 + l (1 + gamma)) in sr(Sigma_l) - 1 ~ C_l T^{1-2l} (Prop. 3; SPEC section 6)."""
    l = check_int(layers, "layers", minimum=1)
    gamma = check_positive(gamma, "gamma")
    sigma2 = check_positive(sigma2, "sigma2")
    return sigma2 ** (2 * l) * (1 + l * (1 + gamma))


def stable_rank_excess(T: int, layers: int, gamma: float = 1.0, sigma2: float = 1.0) -> float:
    """Predicted sr(Sigma_l) - 1 = C_l T^{1-2l} for the model as built (no fix) (Prop. 3; SPEC section 6)."""
    T = check_int(T, "T", minimum=2)
    return width_collapse_constant(layers, gamma, sigma2) * float(T) ** (1 - 2 * layers)


def covariance_bulk(
    layers: int, gamma: float = 1.0, sigma2: float = 1.0, sigma_w2: float = 1.0
) -> FreeMPProduct:
    """Bulk law mu_l of Sigma_l^perp = X_l^perp X_l^perp^T (Prop. 7; SPEC section 8).

    S(u) = k^{-l} (1+u)^{-l} (1+gamma u)^{-l} with k = sigma^2 sigma_W^2 / gamma: mean k^l,
    variance k^{2l} l (1 + gamma).
    """
    l = check_int(layers, "layers", minimum=1)
    gamma = check_positive(gamma, "gamma")
    k = check_positive(sigma2, "sigma2") * check_positive(sigma_w2, "sigma_w2") / gamma
    return FreeMPProduct((1.0,) * l + (gamma,) * l, (k,) * l + (1.0,) * l)


def modified_bulk_edge(layers: int, gamma: float = 1.0) -> float:
    """x_max(l, gamma): right edge of mu_l normalised to mean 1 (SPEC section 6)."""
    return covariance_bulk(layers, gamma, sigma2=gamma).right_edge()


def resolved_rank_constant(layers: int, gamma: float = 1.0) -> float:
    """c_l(gamma) = (1 + l(1+gamma)) / x_max^2, the limit of sr(Sigma_l^perp)/T (Prop. 5; SPEC sec. 6)."""
    l = check_int(layers, "layers", minimum=1)
    return (1 + l * (1 + check_positive(gamma, "gamma"))) / modified_bulk_edge(l, gamma) ** 2


# --- section 7: gradient norms --------------------------------------------------------------


def gradient_norm_sq(
    T: int,
    depth: int,
    gamma: float = 1.0,
    sigma2: float = 1.0,
    sigma_w2: float = 1.0,
    *,
    fix: str = "none",
) -> float:
    """Predicted ||dX_L / dW_l||_F^2 for input-independent attention, any l <= L (SPEC section 7).

    Vanilla (Prop. 4, sharp form with SPEC's turn-2 correction):
    sigma_W^{2(L-1)} d^L [1 + sum_{k=1}^{L-1} (sigma^2/T)^k + T (sigma^2/T)^L], whose first
    correction is sigma^2/T for every L >= 2 (the earlier sigma^{2L} T^{1-L} is only the last term).
    Gap removed (Prop. 6): sigma^{2L} sigma_W^{2(L-1)} gamma^{-L} T.
    For L = 1 these are d (1 + sigma^2) and d sigma^2 with d = T / gamma (eq. 7). These are
    the large-T forms; :func:`gapscope.theory.gradient_norm_sq_exact` puts the exact finite-T
    e = E ||A - 11^T/T||_F^2 in place of sigma^2.
    """
    T = check_int(T, "T", minimum=2)
    L = check_int(depth, "depth", minimum=1)
    gamma = check_positive(gamma, "gamma")
    sigma2 = check_positive(sigma2, "sigma2")
    sigma_w2 = check_positive(sigma_w2, "sigma_w2")
    if check_choice(fix, "fix", ("none", "mean")) == "mean":
        return sigma2**L * sigma_w2 ** (L - 1) * gamma ** (-L) * T
    d = T / gamma
    r = sigma2 / T
    return sigma_w2 ** (L - 1) * d**L * (1 + sum(r**k for k in range(1, L)) + T * r**L)


def gradient_norm_lower_bound(
    T: int, depth: int, layer: int, gamma: float = 1.0, sigma_w2: float = 1.0
) -> float:
    """Spectral lower bound s_1(P_l) s_1(Q_l) on ||dX_L / dW_l||_F (Prop. 4; SPEC section 7).

    s_1(P_l) ~ sigma_W^{l-1} d^{(l-1)/2} (Thm 9) and s_1(W_{l+1}...W_L) ~ sigma_W^{L-l} d^{(L-l)/2}
    sqrt((k+1)^{k+1} / k^k) with k = L - l; together of order d^{(L-1)/2}.
    """
    T = check_int(T, "T", minimum=2)
    L = check_int(depth, "depth", minimum=1)
    layer = check_int(layer, "layer", minimum=1)
    if layer > L:
        raise ValueError(f"layer must be between 1 and depth={L}, got {layer}")
    d = T / check_positive(gamma, "gamma")
    k = L - layer
    tail = math.sqrt((k + 1) ** (k + 1) / k**k) if k > 0 else 1.0
    sigma_w = math.sqrt(check_positive(sigma_w2, "sigma_w2"))
    return sigma_w ** (L - 1) * d ** ((L - 1) / 2) * tail


# --- section 8: Jacobian bulk ---------------------------------------------------------------


def jacobian_bulk_moment(
    order: int, layers: int, gamma: float = 1.0, sigma2: float = 1.0, sigma_w2: float = 1.0
) -> float:
    """n-th moment k^{l n} FC_l(n)^2 of the squared singular values of dX_l^perp/dX_0 (Prop. 8; SPEC 8)."""
    n = check_int(order, "order", minimum=1)
    l = check_int(layers, "layers", minimum=1)
    k = check_positive(sigma2, "sigma2") * check_positive(sigma_w2, "sigma_w2")
    k /= check_positive(gamma, "gamma")
    return k ** (l * n) * fuss_catalan(l, n) ** 2
