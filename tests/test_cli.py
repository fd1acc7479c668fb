"""End-to-end tests of the gapscope command."""

import json

import pytest
from typer.testing import CliRunner

from gapscope.cli import app

runner = CliRunner()


def test_spectrum_json_reports_measured_and_predicted():
    result = runner.invoke(app, ["spectrum", "--law", "exponential", "--T", "400", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["ensemble"]["law"] == "exponential"
    measured, predicted = payload["measured"], payload["predicted"]
    assert predicted["sqrt_T_s2"] == pytest.approx(2.0)
    assert measured["sqrt_T_s2"] == pytest.approx(2.0, rel=0.08)
    assert len(measured["singular_outliers"]) == 1
    assert measured["abs_lambda1"] == pytest.approx(1.0)


def test_spectrum_is_reproducible_from_the_seed():
    args = ["spectrum", "--law", "gamma", "--sigma2", "0.5", "--T", "100", "--json"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == second.exit_code == 0, first.output
    assert first.output == second.output


def test_spectrum_key_query_table_and_figure(tmp_path):
    # --kq is the former spelling of --qk-init, kept for one release
    result = runner.invoke(app, ["spectrum", "--kq", "xavier", "--T", "120", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sqrt(T) s2" in result.output and "key_query" in result.output
    figure = tmp_path / "spectrum.png"
    assert figure.exists() and figure.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*tmp*"))


def test_spectrum_key_query_json_uses_the_finite_dk_prediction():
    result = runner.invoke(app, ["spectrum", "--qk-init", "standard", "--T", "200", "--dk", "50", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["ensemble"]["dk"] == 50
    assert payload["predicted"]["sigma2"] == pytest.approx((1 - 4 / 50) ** -25 * (1 - 1 / 50) ** 50 - 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--T", "1"], "T must be an integer >= 2"),
        (["--law", "uniform", "--sigma2", "2"], "fixed sigma2"),
        (["--sigma2", "-1"], "sigma2 must be > 0"),
        (["--qk-init", "standard", "--T", "50", "--d", "20"], "isometric input needs T <= d"),
    ],
)
def test_spectrum_bad_input_names_the_argument(args, message):
    result = runner.invoke(app, ["spectrum", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_unknown_law_is_refused_by_the_parser():
    result = runner.invoke(app, ["spectrum", "--law", "cauchy"])
    assert result.exit_code == 2 and "cauchy" in result.output


def test_spectrum_samples_through_the_library_with_the_same_draws():
    import torch

    from gapscope.ensembles import isometric_input, key_query_attention, random_markov, sample_attention
    from gapscope.theory import predicted_gap_summary

    A, sigma2 = sample_attention(T=30, seed=4, law="gamma", sigma2=0.5)
    assert sigma2 == 0.5
    assert torch.equal(A, random_markov(30, "gamma", 0.5, generator=torch.Generator().manual_seed(4)))
    B, _ = sample_attention(T=20, seed=2, qk_init="xavier", d=25, dk=6)
    g = torch.Generator().manual_seed(2)
    assert torch.equal(
        B, key_query_attention(isometric_input(20, 25, generator=g), dk=6, init="xavier", generator=g)
    )
    result = runner.invoke(
        app, ["spectrum", "--law", "gamma", "--sigma2", "0.5", "--T", "30", "--seed", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["predicted"].pop("regime") == "random_markov"
    assert payload["predicted"] == pytest.approx(predicted_gap_summary(0.5, 30))
    assert payload["measured"]["s1"] == pytest.approx(float(torch.linalg.matrix_norm(A, ord=2)), rel=1e-9)


def test_spectrum_key_query_theory_names_its_regime_and_predicts_s2_at_long_context():
    """SPEC section 3b: at T = 2000, d_k = 64 the prediction follows the linear outliers, not 2 sigma."""
    result = runner.invoke(app, ["spectrum", "--qk-init", "standard", "--T", "2000", "--dk", "64", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["predicted"]["regime"] == "long_context"
    measured, predicted = payload["measured"]["sqrt_T_s2"], payload["predicted"]["sqrt_T_s2"]
    assert abs(predicted - measured) <= 0.1 * measured
    small = json.loads(runner.invoke(app, ["spectrum", "--T", "50", "--json"]).output)
    assert small["predicted"]["regime"] == "random_markov"


def test_command_line_choices_are_the_library_tuples():
    """The CLI spells its choices out (so --help imports no torch); they must be the library's own."""
    from gapscope.cli.diagnose import DiagnoseFix
    from gapscope.cli.spectrum import InputKind, KeyQueryInit, Law
    from gapscope.cli.sweep import Executor, Scale
    from gapscope.ensembles import INPUTS, KEY_QUERY_INITS, LAWS
    from gapscope.experiments import SCALES
    from gapscope.hf.diagnose import FIXES
    from gapscope.sweep import EXECUTORS

    pairs = [(Law, LAWS), (KeyQueryInit, KEY_QUERY_INITS), (InputKind, INPUTS), (Scale, SCALES)]
    pairs += [(Executor, EXECUTORS), (DiagnoseFix, FIXES)]
    for enum, library in pairs:
        assert sorted(member.value for member in enum) == sorted(library), enum


def test_one_default_scale():
    """The command line's default scale is the library's (DEFAULT_SCALE), in every command that runs."""
    import inspect

    from gapscope.cli.sweep import reproduce, run
    from gapscope.experiments.spec import DEFAULT_SCALE, Experiment
    from gapscope.sweep import measure_table, run_sweep

    for command in (run, reproduce):
        assert inspect.signature(command).parameters["scale"].default.value == DEFAULT_SCALE
    for function in (measure_table, run_sweep, Experiment.cells):
        assert inspect.signature(function).parameters["scale"].default == DEFAULT_SCALE
