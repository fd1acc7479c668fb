"""Theory of the attention remedies at initialisation: centred attention with a gain, differential
attention and length-scaled logits (derived here, not in either paper; numpy/scipy only).

**Centred attention, A - lambda J/T** (J = 11^T, theta := 1 - lambda). Since A 1 = 1,

    A - lambda J/T = theta u u^T + N,    u = 1/sqrt(T),   N = A^perp = A - J/T,   N u = 0,

so the Perron value becomes theta and (A - lambda J/T)(A - lambda J/T)^T = theta^2 u u^T + N N^T
exactly (the cross terms contain N u = 0). N N^T has the Marchenko-Pastur law MP(1, s) with
s = sigma^2/T (SPEC section 4, Lemma 3). A rank-one additive spike beta u u^T on MP(1, s) gives
an outlier at rho = R(1/beta) + beta with R(z) = s/(1 - s z) when beta > 2s (BBP), so

    s_1(lambda)^2 = theta^4 / (theta^2 - sigma^2/T)   if theta^2 > 2 sigma^2/T,
    s_1(lambda)   = 2 sigma / sqrt(T)                 otherwise (the bulk edge).

lambda = 0 gives 1 + sigma^2/(2T), SPEC section 4's finite-T value; lambda = 1 closes the gap.

Width collapse (SPEC section 6 with the rank-one part scaled by theta): with isometric X_0 and
W ~ N(0, sigma_W^2), X_1 = theta u g^T + N Y' with g = W^T X_0^T u (norm^2 ~ d sigma_W^2) and
Y' = (I - uu^T) X_0 W independent of g. The bulk N Y' has squared singular values of mean
k = sigma^2 sigma_W^2 / gamma and second moment k^2 (2 + gamma) (SPEC section 8, l = 1); the
spike, to first order, has s_1^2 = theta^2 d sigma_W^2 + k (1 + gamma) (it picks up the
bulk's mean energy along u and along g). Hence

    sr(Sigma_1) - 1 ~ T k^2 (2 + gamma) / s_1^4  ->  C_1(lambda) / T,
    C_1(lambda) = sigma^4 (2 + gamma) / (1 - lambda)^4,

valid while the spike stands above the bulk edge k x_max(1, gamma); below it (lambda -> 1) the
top singular value is the edge and sr(Sigma_1) ~ c_1(gamma) T (Prop. 5).

**Differential attention** softmax(S_1) - lambda softmax(S_2) with independent maps is
theta J/T + N_1 - lambda N_2, theta = 1 - lambda: the same algebra with sigma^2 replaced by
sigma^2 (1 + lambda^2) (the two bulks add freely).

**Gradients** (input-independent attention, SPEC section 7's exact form): with M_k = theta J/T +
N_k and N_k J = 0, every product M_L...M_1 = sum_{j=0}^{L} theta^j N_L...N_{j+1} (J/T)^[j>0], so

    E ||dX_L/dW_l||_F^2 = sigma_W^{2(L-1)} d^L [ sum_{j=1}^{L} theta^{2j} (e/T)^{L-j} + T (e/T)^L ],

e = E||N||_F^2 (-> sigma^2). Any lambda != 1 keeps the d^L growth (T^L); only lambda = 1 leaves
the linear d^L T (e/T)^L.

**Length-scaled logits** (Scalable-Softmax: logits times s log T). Key-query logits of variance
tau^2 become logits of variance tau_eff^2 = s^2 log^2(T) tau^2, so SPEC section 3 gives
sigma_eff^2 = e^{tau_eff^2} - 1 = T^{s^2 tau^2 log T} - 1 (d_k -> infinity; the finite-d_k form
needs d_k > 4 tau_eff^2). The Random Markov gap s_1/s_2 ~ sqrt(T) / (2 sigma_eff) therefore grows
only while s^2 tau^2 log T < 1/2 and then shrinks; once sigma_eff^2 is of order T, or
E e^{4 S} is infinite (d_k <= 16 tau_eff^2), no closed form is known (heavy-tailed rows, close
to one-hot): it is measured. SPEC section 3b's long-context plateau (tau^4/d_k)(1 + 2 d_k/T)
becomes (tau_eff^4/d_k)(1 + 2 d_k/T), growing like log^4 T, valid only while tau_eff <~ 1.

**Softpick** relu(e^S - 1) / sum_k |e^S_k - 1| (Zuhri, Fuadi and Aji 2025). For S ~ N(0, tau^2),
E[e^S 1{S > 0}] = e^(tau^2/2) Phi(tau), so E relu(e^S - 1) = e^(tau^2/2) Phi(tau) - 1/2 and
E|e^S - 1| = e^(tau^2/2) (2 Phi(tau) - 1); by the law of large numbers over a row's T keys the
row sum tends to their ratio r(tau) (0.788 at tau = 1). Rows no longer sum to one, but the
matrix is r 11^T/T plus a centred part of order 1/sqrt(T): a Perron-like value r over the bulk,
so the gap stays (it is measured, like ReLU / T's).
"""

from __future__ import annotations

import math

from gapscope._checks import check_int, check_positive
from gapscope.theory.predictions import key_query_sigma2, modified_bulk_edge, resolved_rank_constant


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def centred_top_singular_value(gain: float, sigma2: float, T: int) -> float:
    """s_1(A - gain J/T): theta^2/sqrt(theta^2 - sigma^2/T) above the BBP threshold
    theta^2 > 2 sigma^2/T (theta = 1 - gain), else the bulk edge 2 sigma/sqrt(T) (module docstring)."""
    theta2 = (1 - _finite(gain, "gain")) ** 2
    s = check_positive(sigma2, "sigma2") / check_int(T, "T", minimum=2)
    return theta2 / math.sqrt(theta2 - s) if theta2 > 2 * s else 2 * math.sqrt(s)


def centred_top_eigenvalue(gain: float) -> float:
    """The Perron value of A - gain J/T: 1 - gain (A 1 = 1)."""
    return 1 - _finite(gain, "gain")


def centred_width_constant(gain: float, gamma: float = 1.0, sigma2: float = 1.0) -> float:
    """C_1(gain) = sigma^4 (2 + gamma) / (1 - gain)^4, the limit of T (sr(Sigma_1) - 1) for
    A - gain J/T on isometric input (module docstring; gain = 0 is SPEC section 6's C_1)."""
    theta = 1 - _finite(gain, "gain")
    if theta == 0:
        raise ValueError("gain = 1 removes the gap: sr grows like c_1(gamma) T (resolved_rank_constant)")
    return check_positive(sigma2, "sigma2") ** 2 * (2 + check_positive(gamma, "gamma")) / theta**4


def centred_stable_rank(
    T: int, gain: float, gamma: float = 1.0, sigma2: float = 1.0, sigma_w2: float = 1.0
) -> float:
    """Predicted sr(Sigma_1) of one layer with A - gain J/T at finite T (module docstring).

    Above the bulk edge: 1 + T m_2 / s_1^4 with s_1^2 = theta^2 d sigma_W^2 + k (1 + gamma);
    at or below it (gain near 1): T m_2 / (k x_max)^2, which is c_1(gamma) T.
    """
    T = check_int(T, "T", minimum=2)
    gamma = check_positive(gamma, "gamma")
    k = check_positive(sigma2, "sigma2") * check_positive(sigma_w2, "sigma_w2") / gamma
    theta = 1 - _finite(gain, "gain")
    m2 = k**2 * (2 + gamma)
    edge = k * modified_bulk_edge(1, gamma)
    spike = theta**2 * (T / gamma) * sigma_w2 + k * (1 + gamma)
    if spike > edge:
        return 1 + T * m2 / spike**2
    return resolved_rank_constant(1, gamma) * T


def centred_gradient_norm_sq(
    T: int,
    depth: int,
    gain: float,
    gamma: float = 1.0,
    e: float = 1.0,
    sigma_w2: float = 1.0,
) -> float:
    """E ||dX_L/dW_l||_F^2 with every A_k replaced by A_k - gain J/T (input-independent attention):
    sigma_W^{2(L-1)} d^L [sum_{j=1}^L theta^{2j} (e/T)^{L-j} + T (e/T)^L], e = E||A - J/T||_F^2
    (module docstring; gain = 1 is SPEC section 7's fixed form, gain = 0 its exact form as built)."""
    T = check_int(T, "T", minimum=2)
    L = check_int(depth, "depth", minimum=1)
    d = T / check_positive(gamma, "gamma")
    theta2 = (1 - _finite(gain, "gain")) ** 2
    r = check_positive(e, "e") / T
    bracket = sum(theta2**j * r ** (L - j) for j in range(1, L + 1)) + T * r**L
    return check_positive(sigma_w2, "sigma_w2") ** (L - 1) * d**L * bracket


def differential_sigma2(sigma2: float, diff_lambda: float) -> float:
    """The bulk variance of softmax(S_1) - lambda softmax(S_2): sigma^2 (1 + lambda^2); use it
    with gain = lambda in the centred functions (module docstring)."""
    return check_positive(sigma2, "sigma2") * (1 + _finite(diff_lambda, "diff_lambda") ** 2)


def length_scaled_tau2(T: int, length_scale: float, tau2: float = 1.0) -> float:
    """tau_eff^2 = s^2 log^2(T) tau^2, the logit variance after Scalable-Softmax's s log T factor."""
    T = check_int(T, "T", minimum=2)
    return check_positive(length_scale, "length_scale") ** 2 * math.log(T) ** 2 * check_positive(tau2, "tau2")


def length_scaled_sigma2(T: int, length_scale: float, tau2: float = 1.0, dk: int | None = None) -> float:
    """sigma_eff^2 of length-scaled key-query attention: SPEC section 3's e^{tau_eff^2} - 1
    (finite-dk form when dk is given; it needs dk > 4 tau_eff^2)."""
    return key_query_sigma2(length_scaled_tau2(T, length_scale, tau2), dk)


def length_scaled_gap_ratio(T: int, length_scale: float, tau2: float = 1.0) -> float:
    """The Random Markov prediction of s_1/s_2, sqrt(T) / (2 sigma_eff); meaningful only while
    sigma_eff^2 << T (module docstring): beyond, the gap is measured, not predicted."""
    return math.sqrt(T) / (2 * math.sqrt(length_scaled_sigma2(T, length_scale, tau2)))


def length_scaled_plateau(T: int, length_scale: float, dk: int, tau2: float = 1.0) -> float:
    """SPEC section 3b's plateau of sr(Sigma_1) - 1 with tau_eff: (tau_eff^4/dk)(1 + 2 dk/T),
    valid only while tau_eff <~ 1 (it grows like log^4 T)."""
    tau_eff2 = length_scaled_tau2(T, length_scale, tau2)
    dk = check_int(dk, "dk", minimum=1)
    return tau_eff2**2 / dk * (1 + 2 * dk / T)


def softpick_row_sum(tau2: float) -> float:
    """The limit row sum of softpick attention on logits N(0, tau^2): (e^(tau^2/2) Phi(tau) - 1/2) /
    (e^(tau^2/2) (2 Phi(tau) - 1)) (module docstring)."""
    tau = math.sqrt(check_positive(tau2, "tau2"))
    phi = 0.5 * (1 + math.erf(tau / math.sqrt(2)))
    growth = math.exp(tau**2 / 2)
    return (growth * phi - 0.5) / (growth * (2 * phi - 1))
