"""Load a model directory as a Target, with the safety rules of DESIGN.md.

Audited models come from untrusted parties, so: weights are read from ``*.safetensors`` only
(pickle files can run code when loaded); ``--allow-pickle`` relaxes that to
``torch.load(weights_only=True)``; ``trust_remote_code`` is never set; nothing is fetched from a
hub; and every file is hashed into the run record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redteam.errors import InputError, UnsupportedKindError
from redteam.fileio import hash_tree
from redteam.untrusted import parse_json, read_json_object

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
    return read_json_object(path / "config.json", "model config")


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


SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2,
                           "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8,
                           "U64": 8, "F64": 8}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def check_safetensors_file(file: Path) -> None:
    """Refuse a ``.safetensors`` file whose header is unreadable or promises bytes the file
    does not hold (a truncated or empty download), naming the file and the first problem.

    The layout (8-byte little-endian header length, a JSON header of ``dtype``, ``shape`` and
    ``data_offsets`` per tensor, then the data) is checked before any loader touches it.
    """
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InputError(f"{file}: truncated safetensors file ({size} bytes, no header)")
        length = int.from_bytes(head, "little")
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise InputError(f"{file}: truncated or corrupt safetensors file (header of "
                             f"{length:,} bytes in a file of {size:,})")
        raw = handle.read(length)
    try:
        header = parse_json(raw.decode("utf-8"), str(file))
    except UnicodeDecodeError:
        raise InputError(f"{file}: corrupt safetensors header (not UTF-8)") from None
    if not isinstance(header, dict):
        raise InputError(f"{file}: corrupt safetensors header (not an object)")
    available, end_of_data = size - 8 - length, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(info, dict) and info.get("dtype") in SAFETENSORS_DTYPE_BYTES
        shape, offsets = (info.get("shape"), info.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and o >= 0 for o in offsets)
        if not ok:
            raise InputError(f"{file}: corrupt safetensors header at tensor {name}")
        count = 1
        for dim in shape:
            count *= dim
        if offsets[1] - offsets[0] != count * SAFETENSORS_DTYPE_BYTES[info["dtype"]]:
            raise InputError(f"{file}: tensor {name}: its offsets do not match its shape")
        if offsets[1] > available:
            raise InputError(f"{file}: truncated safetensors file (tensor {name} ends at byte "
                             f"{offsets[1]:,} of {available:,})")
        end_of_data = max(end_of_data, offsets[1])
    if end_of_data != available:
        raise InputError(f"{file}: corrupt safetensors file ({available - end_of_data:,} bytes "
                         "after the last tensor)")


def check_shard_index(path: Path) -> None:
    """Every shard named by ``model.safetensors.index.json`` must be in the folder."""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return
    weight_map = read_json_object(index, "safetensors shard index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str)
                                                   for v in weight_map.values()):
        raise InputError(f"{index}: weight_map: expected an object of tensor -> shard file")
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard or not (path / shard).is_file():
            raise InputError(f"{index}: shard {shard} is not in {path}")


def _missing_weights(model, missing: list[str]) -> list[str]:
    """Missing keys that are not tied to another weight (an LM head tied to the embeddings is
    saved once) nor declared optional by the architecture."""
    import re

    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    optional = getattr(model, "_keys_to_ignore_on_load_missing", None) or []
    return [k for k in missing if k not in tied
            and not any(re.search(pattern, k) for pattern in optional)]


def check_loading_info(path: Path, model, info: dict) -> None:
    """Refuse a model whose weights file lacks tensors of its architecture, carries tensors it
    does not have, or has tensors of the wrong shape: it would run with random weights."""
    missing = _missing_weights(model, list(info.get("missing_keys") or []))
    problems = (("missing tensor", missing),
                ("unexpected tensor", list(info.get("unexpected_keys") or [])),
                ("tensor of the wrong shape", [str(m[0]) if isinstance(m, tuple) else str(m)
                                               for m in info.get("mismatched_keys") or []]))
    for what, names in problems:
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise InputError(f"{path}: weights do not match config.json: {what} "
                             f"{sorted(names)[0]}{more}")


def _unpickler_refusal(exc: BaseException) -> str:
    """What the weights-only unpickler refused, without torch's advice to retry unsafely."""
    for line in str(exc).splitlines():
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].strip()
            return reason.split(" was not an allowed global")[0][:300]
    return f"{type(exc).__name__}: not a file of plain tensors"


def _load_pickle_state_dict(path: Path) -> dict:
    """Read pickle weights with ``weights_only=True``: tensors only, no code objects."""
    import pickle
    import warnings

    import torch

    _, pickled = weight_files(path)
    state: dict = {}
    for file in pickled:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's own advice is to load unsafely
                part = torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            raise InputError(f"{file}: refused by the weights-only unpickler "
                             f"({_unpickler_refusal(exc)})") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor)
                                                 for v in part.values()):
            raise InputError(f"{file}: not a state dict of tensors")
        state.update(part)
    return state


def _from_pretrained(path: Path, auto_class, device: str, allow_pickle: bool, dtype):
    """Load weights with ``auto_class``: safetensors, or weights-only pickle when allowed."""
    has_safetensors = check_weights(path, allow_pickle)
    if has_safetensors:
        check_shard_index(path)
        for file in weight_files(path)[0]:
            check_safetensors_file(file)
    common = {"local_files_only": True, "trust_remote_code": False}
    try:
        if has_safetensors:
            model, info = auto_class.from_pretrained(
                path, use_safetensors=True, dtype=dtype, output_loading_info=True,
                device_map="auto" if device == "cuda" else None, **common)
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path, **common)
            model = auto_class.from_config(config, dtype=dtype)
            missing, unexpected = model.load_state_dict(_load_pickle_state_dict(path),
                                                        strict=False)
            info = {"missing_keys": missing, "unexpected_keys": unexpected}
            if hasattr(model, "tie_weights"):
                model.tie_weights()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure inside the loaders is bad input)
        raise InputError(f"{path}: model could not be loaded ({_one_line(exc)})") from None
    check_loading_info(path, model, info)
    if device == "cpu" or not has_safetensors:
        model.to(device)
    return model.eval()


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001  (a corrupt tokenizer file raises anything)
        raise InputError(f"{path}: tokenizer could not be loaded ({_one_line(exc)})") from None
    if isinstance(tokenizer, bool) or not callable(tokenizer):
        raise InputError(f"{path}: no usable tokenizer (tokenizer.json or vocabulary files)")
    return tokenizer


def _image_processor(path: Path):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(path, local_files_only=True, use_fast=False,
                                                  trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001  (a corrupt processor config raises anything)
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
