"""Real architectures through Hugging Face transformers (extra ``hf``): models built offline
from configs, and gapscope's attention implementations registered in transformers' registry.

Importing this package registers ``gapscope_capture``, ``gapscope_gap_free`` and the remedies of
:mod:`gapscope.hf.remedies` (when
transformers is installed; otherwise the first function that needs it says what to install).
"""

import contextlib

from gapscope.hf import remedies  # the drop-ins: centred, and every normaliser acting on scores alone
from gapscope.hf.attention import (
    CAPTURE,
    GAP_FREE,
    AttentionRecorder,
    allowed_keys,
    capture_attention,
    gap_free_attention,
    recording,
    register,
)
from gapscope.hf.models import MODEL_NAMES, build_model, model_config
from gapscope.hf.probe import is_causal, max_positions

with contextlib.suppress(ImportError):
    register()
    remedies.register()

__all__ = [
    "CAPTURE",
    "GAP_FREE",
    "MODEL_NAMES",
    "AttentionRecorder",
    "allowed_keys",
    "build_model",
    "capture_attention",
    "gap_free_attention",
    "is_causal",
    "max_positions",
    "model_config",
    "recording",
    "register",
]
