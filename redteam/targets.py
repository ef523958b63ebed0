"""Load a model directory as a Target, with the safety rules of DESIGN.md.

Audited models come from untrusted parties, so: weights are read from ``*.safetensors`` only
(pickle files can run code when loaded); ``--allow-pickle`` relaxes that to
``torch.load(weights_only=True)``; ``trust_remote_code`` is never set; nothing is fetched from a
hub; and every file is hashed into the run record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redteam.errors import InputError, UnsupportedKindError
from redteam.fileio import hash_tree

KINDS = ("causal-lm", "image-classifier", "text-classifier", "clip", "hysac", "diffusion")
SUPPORTED_KINDS = ("causal-lm", "image-classifier", "text-classifier", "clip", "hysac")
CLIP_KINDS = ("clip", "hysac")  # a HySAC folder is a CLIP folder plus its hyperbolic head
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
HYSAC_CONFIG = "hysac_config.json"


@dataclass
class Target:
    """A loaded model with what the probes and the run record need to know about it."""

    path: Path
    kind: str
    model: Any  # a CLIP or HySAC is a ``hyperbolic.encoder.Encoder`` (tokenizer and processor in)
    tokenizer: Any = None  # the tokenizer, or an image classifier's image processor
    device: str = "cpu"
    files: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a usage error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available on this machine")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: must be auto, cpu or cuda")
    return device


def _read_config(path: Path) -> dict:
    config_path = path / "config.json"
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{config_path}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise InputError(f"{config_path}: not UTF-8 text") from None


def detect_kind(path: str | Path) -> str:
    """The target kind of a model directory, from its files (DESIGN.md, "Targets")."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model path does not exist")
    if not path.is_dir():
        raise InputError(f"{path}: not a model directory (expected a folder with config.json)")
    if (path / "model_index.json").is_file():
        return "diffusion"
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not a model directory (no config.json or model_index.json)")
    config = _read_config(path)
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not architectures:
        raise InputError(f"{path / 'config.json'}: architectures: missing, cannot tell the kind")
    arch = str(architectures[0])
    if arch == "CLIPModel":
        return "hysac" if (path / HYSAC_CONFIG).is_file() else "clip"
    if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
        return "causal-lm"
    if arch.endswith("ForImageClassification"):
        if not (path / "preprocessor_config.json").is_file():
            raise InputError(f"{path}: image classifier without preprocessor_config.json")
        return "image-classifier"
    if arch.endswith("ForSequenceClassification"):
        return "text-classifier"
    raise InputError(f"{path / 'config.json'}: architecture {arch} is not a kind redteam audits")


def weight_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle files) directly in ``path``."""
    files = sorted(p for p in path.iterdir() if p.is_file())
    safe = [p for p in files if p.suffix == ".safetensors"]
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    return safe, pickled


def check_weights(path: Path, allow_pickle: bool) -> bool:
    """Return True when safetensors weights are present; refuse pickle-only directories."""
    safe, pickled = weight_files(path)
    if safe:
        return True
    if not pickled:
        raise InputError(f"{path}: no weight files (*.safetensors)")
    names = ", ".join(p.name for p in pickled)
    if not allow_pickle:
        raise InputError(
            f"{path}: only pickle weights ({names}); refused because unpickling can run code. "
            "Convert them to safetensors, or pass --allow-pickle (torch.load weights_only=True)"
        )
    return False


def _load_pickle_state_dict(path: Path) -> dict:
    """Read pickle weights with ``weights_only=True``: tensors only, no code objects."""
    import pickle

    import torch

    _, pickled = weight_files(path)
    state: dict = {}
    for file in pickled:
        try:
            part = torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            reason = _one_line(exc)
            raise InputError(f"{file}: refused by the weights-only unpickler ({reason})") from None
        if not isinstance(part, dict):
            raise InputError(f"{file}: not a state dict")
        state.update(part)
    return state


def _from_pretrained(path: Path, auto_class, device: str, allow_pickle: bool, dtype):
    """Load weights with ``auto_class``: safetensors, or weights-only pickle when allowed."""
    has_safetensors = check_weights(path, allow_pickle)
    common = {"local_files_only": True, "trust_remote_code": False}
    try:
        if has_safetensors:
            model = auto_class.from_pretrained(
                path, use_safetensors=True, dtype=dtype,
                device_map="auto" if device == "cuda" else None, **common)
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path, **common)
            model = auto_class.from_config(config, dtype=dtype)
            _, unexpected = model.load_state_dict(_load_pickle_state_dict(path), strict=False)
            if unexpected:
                raise InputError(f"{path}: weights do not match config ({unexpected[0]} ...)")
            if hasattr(model, "tie_weights"):
                model.tie_weights()
    except InputError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: model could not be loaded ({_one_line(exc)})") from None
    if device == "cpu" or not has_safetensors:
        model.to(device)
    return model.eval()


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True,
                                             trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: tokenizer could not be loaded ({_one_line(exc)})") from None


def _image_processor(path: Path):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(path, local_files_only=True, use_fast=False,
                                                  trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: image processor could not be loaded "
                         f"({_one_line(exc)})") from None


def load_causal_lm(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(path)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = _from_pretrained(path, AutoModelForCausalLM, device, allow_pickle, dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_image_classifier(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(``PixelClassifier`` wrapping the HF model with its preprocessing, the processor)."""
    import torch
    from transformers import AutoModelForImageClassification

    from redteam.vision import PixelClassifier

    processor = _image_processor(path)
    model = _from_pretrained(path, AutoModelForImageClassification, device, allow_pickle,
                             torch.float32)
    return PixelClassifier(model, processor).to(device).eval(), processor


def load_clip(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(``CLIPModel``, its image processor): e.g. the surrogate of ``redteam protect``."""
    import torch
    from transformers import CLIPModel

    processor = _image_processor(path)
    return _from_pretrained(path, CLIPModel, device, allow_pickle, torch.float32), processor


def load_clip_encoder(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(``Encoder`` of the plain CLIP, its tokenizer), for the safety suite."""
    from hyperbolic.encoder import Encoder

    clip, processor = load_clip(path, device, allow_pickle)
    tokenizer = _tokenizer(path)
    return Encoder(clip, tokenizer, processor).eval(), tokenizer


def load_hysac_encoder(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(``Encoder`` of the HySAC model: the CLIP plus ``hysac_config.json``, its tokenizer)."""
    from hyperbolic.encoder import Encoder
    from hyperbolic.model import HySAC

    clip, processor = load_clip(path, device, allow_pickle)
    tokenizer = _tokenizer(path)
    model = HySAC.from_clip_and_config(clip, path).to(device)
    return Encoder(model, tokenizer, processor).eval(), tokenizer


def load_text_classifier(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(``*ForSequenceClassification`` model, its tokenizer), for the adversarial text probes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tokenizer = _tokenizer(path)
    model = _from_pretrained(path, AutoModelForSequenceClassification, device, allow_pickle,
                             torch.float32)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # GPT-style classifiers ship without a pad token; batched queries need one.
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


LOADERS = {"causal-lm": load_causal_lm, "image-classifier": load_image_classifier,
           "text-classifier": load_text_classifier, "clip": load_clip_encoder,
           "hysac": load_hysac_encoder}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_target(
    path: str | Path,
    kind: str | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
) -> Target:
    """Detect (or check) the kind of ``path``, load it safely, and hash every file."""
    path = Path(path)
    detected = detect_kind(path)
    kind = kind or detected
    if kind not in KINDS:
        raise InputError(f"--kind {kind}: unknown kind (known: {', '.join(KINDS)})")
    if kind not in SUPPORTED_KINDS:
        raise UnsupportedKindError(
            f"{path}: kind {kind} is not supported yet in this release "
            f"(supported: {', '.join(SUPPORTED_KINDS)})"
        )
    files = hash_tree(path)
    model, preprocessor = LOADERS[kind](path, device, allow_pickle)
    return Target(path=path, kind=kind, model=model, tokenizer=preprocessor, device=device,
                  files=files)
