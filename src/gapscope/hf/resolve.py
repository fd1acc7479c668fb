"""The model a diagnosis reads, from the spelling its user writes, with its weights said out loud.

* a Hugging Face Hub id (``bert-base-uncased``, ``openai-community/gpt2``): the pretrained
  weights through ``from_pretrained``, read from the local Hugging Face cache first; downloaded
  only when it is not there and the machine is online (``HF_HUB_OFFLINE`` unset);
* ``random:<name>``: the same architecture at random initialisation under ``seed``, its config
  taken from gapscope's built-in names (:data:`gapscope.hf.models.MODEL_NAMES`), a Hub id in the
  cache, a shipped pretrained name or a local folder. Its label always says "random init";
* a shipped pretrained name (:data:`gapscope.hf.pretrained.PRETRAINED`) or a local folder;
* a bare built-in name (``gpt2``, ``roberta-base``, ...): random init as before, with a
  FutureWarning, since on the Hub those names are pretrained models; write ``random:gpt2``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RANDOM = "random:"
PRETRAINED_WEIGHTS = "pretrained"
RANDOM_WEIGHTS = "random init"


@dataclass(frozen=True)
class Resolved:
    """A model ready to diagnose: the module, its tokenizer (or None), the label every line,
    table and page shows, and which weights it carries ('pretrained', 'random init', or
    'as given' for a model object)."""

    model: Any
    tokenizer: Any
    label: str
    weights: str


def random_label(name: str, tiny: bool = False) -> str:
    """'gpt2 (random init)', or 'gpt2 (random init, tiny)'."""
    return f"{name} ({RANDOM_WEIGHTS}, tiny)" if tiny else f"{name} ({RANDOM_WEIGHTS})"


def resolve_name(name: str, *, seed: int = 0, tiny: bool = False, with_tokenizer: bool = True) -> Resolved:
    """The model a spelling names (see the module docstring); ``tiny`` shrinks a random-init
    built-in architecture to two layers of width 32 (for tests)."""
    from gapscope.hf.models import MODEL_NAMES
    from gapscope.hf.pretrained import PRETRAINED, model_and_tokenizer

    if name.startswith(RANDOM):
        base = name[len(RANDOM) :]
        if not base:
            raise ValueError("model: 'random:' needs a name after it, e.g. 'random:gpt2'")
        if base in MODEL_NAMES:
            model, tokenizer = model_and_tokenizer(base, seed=seed, tiny=tiny, with_tokenizer=with_tokenizer)
        else:
            _no_tiny(tiny, name)
            pretrained = resolve_name(base, seed=seed, with_tokenizer=with_tokenizer)
            from gapscope.hf.probe import random_init_like

            model, tokenizer = random_init_like(pretrained.model, seed=seed), pretrained.tokenizer
        return Resolved(model, tokenizer, random_label(base, tiny), RANDOM_WEIGHTS)
    if name in MODEL_NAMES:
        warnings.warn(
            f"model {name!r} means {name} at random initialisation; write 'random:{name}' (a later gapscope "
            f"reads {name!r} as a Hub id, i.e. the pretrained weights)",
            FutureWarning,
            stacklevel=3,
        )
        model, tokenizer = model_and_tokenizer(name, seed=seed, tiny=tiny, with_tokenizer=with_tokenizer)
        return Resolved(model, tokenizer, random_label(name, tiny), RANDOM_WEIGHTS)
    _no_tiny(tiny, name)
    if name in PRETRAINED or (Path(name) / "config.json").is_file():
        model, tokenizer = model_and_tokenizer(name, with_tokenizer=with_tokenizer)
        return Resolved(model, tokenizer, name, PRETRAINED_WEIGHTS)
    model, tokenizer = from_hub(name, with_tokenizer=with_tokenizer)
    return Resolved(model, tokenizer, name, PRETRAINED_WEIGHTS)


def _no_tiny(tiny: bool, name: str) -> None:
    from gapscope.hf.models import MODEL_NAMES

    if tiny:
        raise ValueError(f"tiny applies to the random-init names {list(MODEL_NAMES)}, not to {name!r}")


def looks_like_hub_id(name: str) -> bool:
    """'name' or 'owner/name' of letters, digits, '-', '_' and '.' (a Hub repository id)."""
    parts = name.split("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return (
        0 < len(parts) <= 2
        and all(part and set(part) <= allowed and not part.startswith(".") for part in parts)
        and not name.endswith(".")
    )


def from_hub(repo_id: str, *, with_tokenizer: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer or None) of a Hub id, in eval mode: from the local Hugging Face cache,
    else downloaded when online; a ValueError saying how to get it there when neither works."""
    from gapscope._optional import require

    require("transformers", "gapscope.hf")
    from transformers import AutoModel, AutoTokenizer

    from gapscope.hf.attention import register
    from gapscope.hf.models import MODEL_NAMES
    from gapscope.hf.pretrained import PRETRAINED

    if not looks_like_hub_id(repo_id):
        raise ValueError(
            f"model: {repo_id!r} is neither a folder with config.json nor a Hub id ('name' or 'owner/name'); "
            "write 'random:<name>' for a random-init architecture"
        )
    register()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    attempts = (True,) if offline else (True, False)
    failure: Exception | None = None
    for local_only in attempts:
        try:
            model = AutoModel.from_pretrained(repo_id, local_files_only=local_only)
        except OSError as err:
            failure = err
            continue
        tokenizer = None
        if with_tokenizer:
            try:
                tokenizer = AutoTokenizer.from_pretrained(repo_id, local_files_only=local_only)
            except (OSError, ValueError):
                tokenizer = None  # the text options then say that no tokenizer is there
        return model.eval(), tokenizer
    raise ValueError(
        f"model: {repo_id!r} is not in the local Hugging Face cache ({hub_cache()})"
        + (" and HF_HUB_OFFLINE is set" if offline else " and could not be downloaded")
        + f" ({_first_line(failure)}). On a machine with a connection, run "
        f"`python -c \"import transformers as t; t.AutoModel.from_pretrained('{repo_id}'); "
        f"t.AutoTokenizer.from_pretrained('{repo_id}')\"` and copy its cache here (or point HF_HOME "
        "at it), or save the model with save_pretrained and pass that folder. Offline here: "
        f"{', '.join(repr(RANDOM + name) for name in MODEL_NAMES)} (random init), "
        f"{', '.join(map(repr, PRETRAINED))} (pretrained, shipped in packages), or a local folder"
    ) from None


def hub_cache() -> str:
    """The folder transformers reads Hub models from (``HF_HUB_CACHE``, ``HF_HOME``/hub, ...)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _first_line(err: Exception | None) -> str:
    text = str(err or "").strip().splitlines()
    return text[0] if text else type(err).__name__
