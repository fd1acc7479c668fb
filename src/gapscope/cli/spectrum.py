"""``gapscope spectrum``: sample attention at initialisation and compare its gap with the theory."""

from __future__ import annotations

import contextlib
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gapscope import __version__
from gapscope.cli import app
from gapscope.cli._shared import console, notices
from gapscope.cli._shared import fail as _fail


class Law(str, Enum):
    lognormal = "lognormal"
    exponential = "exponential"
    gamma = "gamma"
    uniform = "uniform"
    half_normal = "half-normal"
    bernoulli = "bernoulli"


class KeyQueryInit(str, Enum):
    standard = "standard"
    xavier = "xavier"
    he = "he"


class InputKind(str, Enum):
    isometric = "isometric"
    gaussian = "gaussian"


GIB = 2**30
DENSE_CAP = 8 * GIB


def _memory_limit() -> tuple[int, str]:
    """The most memory ``spectrum`` may ask for: 8 GiB, or half the available memory if less."""
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None or available // 2 >= DENSE_CAP:
        return DENSE_CAP, "8 GiB"
    return available // 2, f"half the available memory, {available / GIB:.1f} GiB"


@app.command()
def spectrum(
    law: Annotated[Law, typer.Option(help="Entry law of the Random Markov matrix.")] = Law.lognormal,
    sigma2: Annotated[
        float | None, typer.Option(help="Normalised variance of the entries (lognormal, gamma, bernoulli).")
    ] = None,
    T: Annotated[
        int,
        typer.Option(
            "--tokens",
            "--t",
            "--T",
            help="Number of tokens (matrix size). The spectrum is dense: sizes whose estimated memory "
            "exceeds 8 GiB (or half the available memory, if less) are refused.",
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    qk_init: Annotated[
        KeyQueryInit | None,
        typer.Option("--qk-init", "--kq", help="Sample key-query attention with this init instead."),
    ] = None,
    d: Annotated[int | None, typer.Option(help="Width of the input (key-query; default T).")] = None,
    dk: Annotated[int | None, typer.Option(help="Key/query width, >= 1 (key-query; default d).")] = None,
    input_kind: Annotated[
        InputKind, typer.Option("--input", help="Key-query input: isometric or unit Gaussian rows.")
    ] = InputKind.isometric,
    out: Annotated[Path | None, typer.Option(help="Directory for the figure.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Sample attention at initialisation and compare its spectral gap with the theory (SPEC section 4)."""
    from gapscope._checks import check_int
    from gapscope._io import check_output_directory
    from gapscope.ensembles import dense_attention_bytes, predicted_spectrum, sample_attention
    from gapscope.linalg import spectral_gap

    if qk_init is None:
        described: dict[str, Any] = {"kind": "random_markov", "law": law.value, "sigma2": sigma2}
    else:
        width = T if d is None else d
        described = {
            "kind": "key_query",
            "qk_init": qk_init.value,
            "d": width,
            "dk": width if dk is None else dk,
        }
        described["input"] = input_kind.value
    described |= {"T": T, "seed": seed}
    try:
        if out is not None:
            check_output_directory(out)
        check_int(T, "T", minimum=2)
        for name, value in (("d", d), ("dk", dk)):
            if value is not None:
                check_int(value, name, minimum=1)
        needed = dense_attention_bytes(T, qk_init=None if qk_init is None else qk_init.value, d=d, dk=dk)
        limit, stated = _memory_limit()
        if needed > limit:
            raise ValueError(
                f"T = {T} needs about {needed / GIB:.1f} GiB for the dense spectrum, above the limit of "
                f"{limit / GIB:.1f} GiB ({stated}); choose a smaller --T"
            )
        if needed > GIB:
            notices.print(f"T = {T}: the dense spectrum needs about {needed / GIB:.1f} GiB", style="yellow")
        A, predicted_sigma2 = sample_attention(
            T=T,
            seed=seed,
            law=law.value,
            sigma2=sigma2,
            qk_init=None if qk_init is None else qk_init.value,
            d=d,
            dk=dk,
            input=input_kind.value,
        )
        gap = spectral_gap(A)
        predicted = predicted_spectrum(
            T=T, law=law.value, sigma2=sigma2, qk_init=None if qk_init is None else qk_init.value, d=d, dk=dk
        )
    except (ValueError, TypeError) as err:
        _fail(str(err))
        return
    summary = gap.to_dict()
    figures: list[str] = []
    if out is not None:
        from gapscope.plot import save_figure, spectrum_figure

        title = ", ".join(f"{k}={v}" for k, v in described.items() if v is not None)
        path = save_figure(spectrum_figure(A, predicted_sigma2, title), out / "spectrum.png")
        figures.append(str(path))
    if as_json:
        payload = {"version": __version__, "ensemble": described, "measured": summary}
        print(json.dumps(payload | {"predicted": predicted, "figures": figures}, indent=2))
        return
    regime = {
        "random_markov": "Random Markov regime (Mind the Gap, Thm 2; SPEC section 4)",
        "long_context": "long-context regime, T >> d_k: d_k linear outliers (SPEC section 3b)",
    }[predicted["regime"]]
    table = Table(title=f"spectral gap: {described['kind']} (T={T}, seed={seed}); theory: {regime}")
    for column in ("quantity", "measured", "theory"):
        table.add_column(column, justify="right" if column != "quantity" else "left")
    rows = [
        ("s1", summary["s1"], predicted["s1"]),
        ("sqrt(T) s2", summary["sqrt_T_s2"], predicted["sqrt_T_s2"]),
        ("|lambda1|", summary["abs_lambda1"], predicted["abs_lambda1"]),
        ("sqrt(T) |lambda2|", summary["sqrt_T_abs_lambda2"], predicted["sqrt_T_abs_lambda2"]),
        ("sigma2 (mean sv^2 of sqrt(T) A^⊥)", summary["sigma2"], predicted["sigma2"]),
        ("gap ratio s1/s2", summary["gap_ratio"], predicted["gap_ratio"]),
        ("singular outliers", len(summary["singular_outliers"]), predicted["singular_outliers"]),
        ("eigenvalue outliers", len(summary["eigen_outliers"]), predicted["eigen_outliers"]),
    ]
    for name, measured, theory in rows:
        table.add_row(name, f"{measured:.6g}", "-" if theory is None else f"{theory:.6g}")
    console.print(table)
    console.print(
        f"bulk edges from the measured sigma2: singular {summary['singular_edge']:.4g}, "
        f"eigen {summary['eigen_edge']:.4g}; outliers lie above {1 + gap.margin:g} x the edge."
    )
    for path_str in figures:
        console.print(f"figure: {path_str}")
