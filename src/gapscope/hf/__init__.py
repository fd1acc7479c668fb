"""Real architectures through Hugging Face transformers (extra ``hf``): models built offline
from configs, and gapscope's attention implementations registered in transformers' registry."""

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

__all__ = [
    "CAPTURE",
    "GAP_FREE",
    "MODEL_NAMES",
    "AttentionRecorder",
    "allowed_keys",
    "build_model",
    "capture_attention",
    "gap_free_attention",
    "model_config",
    "recording",
    "register",
]
