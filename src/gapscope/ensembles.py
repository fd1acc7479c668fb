"""Samplers for random attention at initialisation and for model inputs.

* Random Markov matrices A_ij = x_ij / sum_k x_ik with i.i.d. non-negative entries
  (Mind the Gap, Def. 1.1; SPEC section 2), for every entry law gapscope knows.
* Isometric inputs (X X^T = I) and non-isometric ones (Gaussian rows of unit length).
* Key-query softmax attention at initialisation under N(0,1), Xavier or He weights
  (Mind the Gap, Prop. 1; SPEC section 3).
* :func:`sample_attention`: one matrix of either kind with the sigma^2 theory predicts
  for it, and :func:`dense_attention_bytes`, the memory its dense spectrum needs.

Every sampler takes ``generator``: an integer seed or a ``torch.Generator``; the
same seed gives bit-identical samples on the same machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gapscope._checks import as_generator, check_choice, check_int, check_positive, check_tensor
from gapscope.theory import key_query_gap_prediction, key_query_sigma2, key_query_tau2, predicted_gap_summary

LAWS = ("lognormal", "exponential", "gamma", "uniform", "half-normal", "bernoulli")
KEY_QUERY_INITS = ("standard", "xavier", "he")

BatchShape = Sequence[int]


@dataclass(frozen=True)
class EntryLaw:
    """Law of the i.i.d. non-negative entries behind a Random Markov matrix (SPEC section 2).

    ``sigma2`` is the normalised variance var/mean^2: the only property of the law
    that the limit theorems see (the sigma^2 of Mind the Gap, Thm 2).
    ``parameters`` holds the sampler's own parameters, for the record.
    """

    name: str
    sigma2: float
    parameters: tuple[tuple[str, float], ...] = ()

    def parameter(self, key: str) -> float:
        return dict(self.parameters)[key]

    def sample_logits(
        self, shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        """Draw log x for i.i.d. entries x of this law (an entry of 0 gives -inf).

        Working with logs makes every Random Markov matrix a row softmax, which
        never overflows whatever sigma^2 is.
        """
        size = tuple(shape)
        if self.name == "lognormal":
            return torch.randn(size, generator=generator, dtype=dtype) * self.parameter("s")
        if self.name == "exponential":
            x = torch.empty(size, dtype=dtype).exponential_(generator=generator)
        elif self.name == "gamma":
            k = self.parameter("k")
            x = torch._standard_gamma(torch.full(size, k, dtype=dtype), generator=generator) / k
        elif self.name == "uniform":
            x = torch.rand(size, generator=generator, dtype=dtype)
        elif self.name == "half-normal":
            x = torch.randn(size, generator=generator, dtype=dtype).abs()
        else:
            p, eps = self.parameter("p"), self.parameter("eps")
            x = torch.bernoulli(torch.full(size, p, dtype=dtype), generator=generator) + eps
        return torch.log(x)


def entry_law(
    name: str,
    sigma2: float | None = None,
    *,
    p: float | None = None,
    eps: float | None = None,
) -> EntryLaw:
    """Build an entry law by name, optionally at a chosen normalised variance ``sigma2``.

    * ``lognormal``: exp(s Z) with s^2 = ln(1 + sigma2); any sigma2 > 0 (default 1).
    * ``exponential``: Exp(1), sigma2 = 1.
    * ``gamma``: Gamma(k, 1/k) with k = 1/sigma2; any sigma2 > 0 (default 1).
    * ``uniform``: U(0, 1), sigma2 = 1/3.
    * ``half-normal``: |N(0, 1)|, sigma2 = pi/2 - 1.
    * ``bernoulli``: Bernoulli(p) + eps, sigma2 = p(1-p)/(p+eps)^2 (defaults p = 0.5,
      eps = 0.1); given ``sigma2`` instead of ``eps``, eps is solved for.
    """
    check_choice(name, "law", LAWS)
    if sigma2 is not None:
        sigma2 = check_positive(sigma2, "sigma2")
    if name != "bernoulli" and (p is not None or eps is not None):
        raise ValueError(f"p and eps apply only to the 'bernoulli' law, not to {name!r}")
    if name == "lognormal":
        s2 = 1.0 if sigma2 is None else sigma2
        return EntryLaw(name, s2, (("s", math.sqrt(math.log1p(s2))),))
    if name == "gamma":
        s2 = 1.0 if sigma2 is None else sigma2
        return EntryLaw(name, s2, (("k", 1.0 / s2),))
    fixed = {"exponential": 1.0, "uniform": 1.0 / 3.0, "half-normal": math.pi / 2 - 1}
    if name in fixed:
        if sigma2 is not None and not math.isclose(sigma2, fixed[name], rel_tol=1e-12):
            raise ValueError(
                f"law {name!r} has the fixed sigma2 = {fixed[name]:.6g}; got sigma2={sigma2}. "
                "Use 'lognormal' or 'gamma' to choose sigma2."
            )
        return EntryLaw(name, fixed[name])
    p = 0.5 if p is None else check_positive(p, "p")
    if p >= 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if sigma2 is not None and eps is not None:
        raise ValueError("give either sigma2 or eps for the 'bernoulli' law, not both")
    if sigma2 is not None:
        eps = math.sqrt(p * (1 - p) / sigma2) - p
        if eps <= 0:
            raise ValueError(
                f"sigma2 must be < (1-p)/p = {(1 - p) / p:.6g} for the 'bernoulli' law with p={p}; "
                f"got {sigma2}"
            )
    eps = 0.1 if eps is None else check_positive(eps, "eps")
    return EntryLaw(name, p * (1 - p) / (p + eps) ** 2, (("p", p), ("eps", eps)))


def random_markov(
    T: int,
    law: str | EntryLaw = "lognormal",
    sigma2: float | None = None,
    *,
    batch_shape: BatchShape = (),
    dtype: torch.dtype = torch.float64,
    generator: Any = None,
) -> torch.Tensor:
    """Sample Random Markov matrices of shape ``(*batch_shape, T, T)`` (Mind the Gap, Def. 1.1).

    Rows are x_i / sum_j x_ij for i.i.d. entries of the given law, computed as the row
    softmax of log x. Use :func:`entry_law` to read the normalised sigma^2 of a law.
    """
    T = check_int(T, "T", minimum=2)
    spec = law if isinstance(law, EntryLaw) else entry_law(law, sigma2)
    g = as_generator(generator)
    return torch.softmax(spec.sample_logits((*batch_shape, T, T), g, dtype), dim=-1)


def isometric_input(
    T: int,
    d: int,
    *,
    batch_shape: BatchShape = (),
    dtype: torch.dtype = torch.float64,
    generator: Any = None,
) -> torch.Tensor:
    """Sample X of shape (..., T, d) with orthonormal rows, X X^T = I_T, Haar-distributed.

    The rows are the first T rows of a Haar orthogonal d x d matrix (QR of a Gaussian
    matrix with the signs fixed by diag R), the isometric input of Mind the Gap.
    """
    T = check_int(T, "T", minimum=2)
    d = check_int(d, "d", minimum=1)
    if T > d:
        raise ValueError(f"isometric input needs T <= d (X X^T = I_T has rank T); got T={T}, d={d}")
    g = as_generator(generator)
    gauss = torch.randn((*batch_shape, d, T), generator=g, dtype=dtype)
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return (q * signs.unsqueeze(-2)).transpose(-2, -1)


def unit_gaussian_rows(
    T: int,
    d: int,
    *,
    batch_shape: BatchShape = (),
    dtype: torch.dtype = torch.float64,
    generator: Any = None,
) -> torch.Tensor:
    """Sample non-isometric input: i.i.d. Gaussian rows normalised to unit length (any T, d)."""
    T = check_int(T, "T", minimum=2)
    d = check_int(d, "d", minimum=1)
    g = as_generator(generator)
    x = torch.randn((*batch_shape, T, d), generator=g, dtype=dtype)
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


def key_query_std(init: str | float, d: int, dk: int) -> float:
    """Entry std of W_Q, W_K in R^{d x dk}: 1 (standard), sqrt(2/(d+dk)) (Xavier), sqrt(2/d) (He)."""
    if not isinstance(init, str):
        return check_positive(init, "init")
    check_choice(init, "init", KEY_QUERY_INITS)
    return {"standard": 1.0, "xavier": math.sqrt(2.0 / (d + dk)), "he": math.sqrt(2.0 / d)}[init]


def key_query_attention(
    X: torch.Tensor,
    *,
    dk: int | None = None,
    init: str | float = "standard",
    generator: Any = None,
) -> torch.Tensor:
    """Softmax attention softmax(X W_Q W_K^T X^T / sqrt(dk)) with fresh Gaussian W_Q, W_K.

    Mind the Gap, Prop. 1 (SPEC section 3). ``X`` has shape (..., T, d); each batch
    element gets its own weights. ``init`` is 'standard', 'xavier', 'he' or an entry std.
    """
    X = check_tensor(X, "X")
    d = X.shape[-1]
    dk = d if dk is None else check_int(dk, "dk", minimum=1)
    std = key_query_std(init, d, dk)
    g = as_generator(generator)
    w = torch.randn((2, *X.shape[:-2], d, dk), generator=g, dtype=X.dtype) * std
    q, k = X @ w[0], X @ w[1]
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dk), dim=-1)


INPUTS = ("isometric", "gaussian")


def sample_attention(
    *,
    T: int,
    seed: int = 0,
    law: str = "lognormal",
    sigma2: float | None = None,
    qk_init: str | None = None,
    d: int | None = None,
    dk: int | None = None,
    gamma: float = 1.0,
    input: str = "isometric",
) -> tuple[torch.Tensor, float]:
    """One T x T attention matrix (float64) and the sigma^2 the theory predicts for it.

    Without ``qk_init``: a Random Markov matrix with entries of ``law`` (at ``sigma2`` where the
    law allows it); the prediction is the law's normalised variance (Mind the Gap, Thm 2;
    SPEC section 2). With ``qk_init`` = 'standard', 'xavier' or 'he': key-query attention on an
    ``input`` ('isometric' or 'gaussian' rows) of width ``d`` (default round(T / gamma))
    with key width ``dk`` (default d); the prediction is the variance of exp(S) at finite
    dk when dk > 4 tau^2, else its dk -> infinity limit (Prop. 1; SPEC section 3).
    The draws come from one generator seeded with ``seed``, input first, then weights.
    """
    T = check_int(T, "T", minimum=2)
    g = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    if qk_init is None:
        entries = entry_law(law, sigma2)
        return random_markov(T, entries, generator=g), entries.sigma2
    check_choice(qk_init, "qk_init", KEY_QUERY_INITS)
    check_choice(input, "input", INPUTS)
    d = round(T / check_positive(gamma, "gamma")) if d is None else d
    d = check_int(d, "d", minimum=1)
    dk = d if dk is None else check_int(dk, "dk", minimum=1)
    sample = unit_gaussian_rows if input == "gaussian" else isometric_input
    A = key_query_attention(sample(T, d, generator=g), dk=dk, init=qk_init, generator=g)
    std = key_query_std(qk_init, d, dk)
    tau2 = key_query_tau2(std, std)
    return A, key_query_sigma2(tau2, dk) if dk > 4 * tau2 else key_query_sigma2(tau2)


def predicted_spectrum(
    *,
    T: int,
    law: str = "lognormal",
    sigma2: float | None = None,
    qk_init: str | None = None,
    d: int | None = None,
    dk: int | None = None,
    gamma: float = 1.0,
) -> dict[str, Any]:
    """What the theory predicts for the matrix :func:`sample_attention` draws, with its regime.

    A Random Markov matrix follows Thm 2 (SPEC section 4; regime 'random_markov'). Key-query
    attention with tau^2 = (std_Q std_K)^2 on unit-norm tokens follows
    :func:`gapscope.theory.key_query_gap_prediction`: the Random Markov law while T <~ d_k,
    the long-context law of SPEC section 3b (d_k linear outliers, s_2 near tau / sqrt(d_k))
    beyond; the 'regime' key says which. Keys follow :meth:`gapscope.linalg.SpectralGap.to_dict`.
    """
    T = check_int(T, "T", minimum=2)
    if qk_init is None:
        return {"regime": "random_markov"} | predicted_gap_summary(entry_law(law, sigma2).sigma2, T)
    width = round(T / check_positive(gamma, "gamma")) if d is None else check_int(d, "d", minimum=1)
    key = width if dk is None else check_int(dk, "dk", minimum=1)
    std = key_query_std(qk_init, width, key)
    p = key_query_gap_prediction(T, key, math.sqrt(key_query_tau2(std, std)))
    return {
        "regime": p.regime,
        "s1": p.s1,
        "sqrt_T_s2": p.sqrt_T_s2,
        "abs_lambda1": 1.0,
        "sqrt_T_abs_lambda2": p.sqrt_T_abs_lambda2,
        "sigma2": p.sigma2,
        "gap_ratio": p.gap_ratio,
        # up to d_k linear outliers also clear the Random Markov edge at long context: no single count
        "singular_outliers": 1 if p.regime == "random_markov" else None,
        "eigen_outliers": 1,
    }


def dense_attention_bytes(
    T: int, *, qk_init: str | None = None, d: int | None = None, dk: int | None = None, gamma: float = 1.0
) -> int:
    """Rough peak memory, in bytes, of :func:`sample_attention` followed by the dense
    :func:`gapscope.linalg.spectral_gap` (float64 throughout).

    The matrix, its singular values and its eigenvalues hold about four T x T copies at
    once; key-query attention adds the input, its QR factors, W_Q, W_K and the queries and
    keys. Measured peaks at T = 1000 to 3000 lie below this estimate.
    """
    T = check_int(T, "T", minimum=2)
    words = 4 * T * T
    if qk_init is not None:
        width = round(T / gamma) if d is None else max(int(d), 1)
        key = width if dk is None else max(int(dk), 1)
        words += 4 * T * T + 3 * T * width + 2 * width * key + 2 * T * key
    return 8 * words


INSTANCE_ATTENTIONS = ("reversible", "generic")
VALUE_SPECTRA = {"sharpening": (-1.0, 0.0), "smoothing": (0.0, 1.0), "real": (-3.0, 3.0), "gaussian": None}


def oversmoothing_instance(
    n: int, d: int, attention: str, value_spectrum: str, *, generator: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random (A, B, X_0) of the kinds SPEC section 10 checks the dominance rule on (float64).

    ``attention``: 'reversible' (A = D^-1 K with K = exp(S), S symmetric Gaussian, so the
    eigenvalues of A are real) or 'generic' (a lognormal Random Markov matrix, complex
    eigenvalues). ``value_spectrum``: B = V diag(lambda) V^-1 with V Gaussian and lambda
    uniform in [-1, 0) 'sharpening', (0, 1] 'smoothing' or [-3, 3] 'real'; or 'gaussian',
    B = G / sqrt(d) with complex eigenvalues (Record Straight, Cor. 3).
    """
    n, d = check_int(n, "n", minimum=2), check_int(d, "d", minimum=1)
    check_choice(attention, "attention", INSTANCE_ATTENTIONS)
    check_choice(value_spectrum, "value_spectrum", tuple(VALUE_SPECTRA))
    g = as_generator(generator)
    if attention == "reversible":
        S = torch.randn((n, n), generator=g, dtype=torch.float64)
        K = torch.exp((S + S.T) / 2)
        A = K / K.sum(dim=-1, keepdim=True)
    else:
        A = random_markov(n, "lognormal", 1.0, generator=g)
    bounds = VALUE_SPECTRA[value_spectrum]
    if bounds is None:
        B = torch.randn((d, d), generator=g, dtype=torch.float64) / math.sqrt(d)
    else:
        low, high = bounds
        u = torch.rand(d, generator=g, dtype=torch.float64)  # in [0, 1): keep 0 out of the spectrum
        lam = low + (high - low) * u if value_spectrum == "sharpening" else high - (high - low) * u
        V = torch.randn((d, d), generator=g, dtype=torch.float64)
        B = V @ torch.diag(lam) @ torch.linalg.inv(V)
    X0 = torch.randn((n, d), generator=g, dtype=torch.float64)
    return A, B, X0
