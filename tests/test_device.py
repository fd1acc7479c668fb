"""--device: CUDA where there is one, the CPU with a warning where there is none, the same numbers."""

import pandas as pd
import pytest
import torch

from gapscope._checks import resolve_device
from gapscope.experiments import Experiment
from gapscope.nn import named_config
from gapscope.sweep import run_cell, run_sweep
from gapscope.training import train_stack

has_cuda = torch.cuda.is_available()
SMALL = {
    "name": "small",
    "module": "collapse",
    "figure": "width",
    "fixed": {"depth": 2},
    "grid": {"config": ["A", "A(X)^⊥"], "T": [8, 12], "seed": [0]},
}


def test_devices_are_checked_by_name():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(has_cuda, reason="this machine has CUDA")
def test_cuda_without_a_gpu_warns_and_runs_on_the_cpu(tmp_path):
    with pytest.warns(UserWarning, match="CUDA is not available here; running on the CPU"):
        assert resolve_device("cuda") == torch.device("cpu")
    experiment = Experiment.from_dict(SMALL)
    on_cpu = run_sweep(experiment, tmp_path / "cpu", scale="paper", progress=False)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        fallback = run_sweep(experiment, tmp_path / "cuda", scale="paper", progress=False, device="cuda")
    pd.testing.assert_frame_equal(
        fallback.sort_values(["cell", "layer"]), on_cpu.sort_values(["cell", "layer"])
    )
    config = named_config("A + skip", T=8, d=8, depth=1, dtype="float32")
    with pytest.warns(UserWarning):
        assert train_stack(config, 0.05, n_train=4, steps=3, device="cuda") == train_stack(
            config, 0.05, n_train=4, steps=3
        )


@pytest.mark.skipif(not has_cuda, reason="no CUDA device on this machine")
@pytest.mark.parametrize(("module", "figure"), [("collapse", "width"), ("gradient_norms", "width")])
def test_cuda_measurements_agree_with_the_cpu(module, figure):
    experiment = Experiment.from_dict(
        {
            "name": "x",
            "module": module,
            "figure": figure,
            "fixed": {"depth": 2, "config": "A(X) + skip"}
            | ({"method": "exact"} if module == "gradient_norms" else {}),
            "grid": {"T": [16, 24], "seed": [0]},
        }
    )
    cell = experiment.cells("paper")[0]
    on_cpu = pd.DataFrame(run_cell(module, cell, "cpu"))
    on_gpu = pd.DataFrame(run_cell(module, cell, "cuda"))
    numeric = on_cpu.select_dtypes("number").columns
    pd.testing.assert_frame_equal(on_gpu[numeric], on_cpu[numeric], rtol=1e-8, atol=1e-10)
