"""Load a model directory as a Target, with the safety rules of docs/threat-model.md ("Safety
rules for untrusted models").

Audited models come from untrusted parties, so: weights are read from ``*.safetensors`` only
(pickle files can run code when loaded); ``--allow-pickle`` relaxes that to
``torch.load(weights_only=True)``; ``trust_remote_code`` is never set; nothing is fetched from a
hub; and every file is hashed into the run record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperbolic import HYSAC_CONFIG
from redteam.core import attention_masks
from redteam.core.budget import PASS_THROUGH, BudgetExceeded, deadline, native_stderr_silenced
from redteam.core.errors import InputError, UnsupportedKindError
from redteam.core.fileio import hash_tree
from redteam.core.untrusted import read_json_object
from redteam.core.weights import (
    check_finite,
    check_label_map,
    check_loading_info,
    check_safetensors_file,
    check_shard_index,
    check_weights,
    load_pickle_state_dict,
    one_line,
    weight_files,
)

CLIP_KINDS = ("clip", "hysac")  # a HySAC folder is a CLIP folder plus its hyperbolic head


@dataclass
class Target:
    """A loaded model with what the probes and the run record need to know about it."""

    path: Path
    kind: str
    model: Any  # a CLIP or HySAC is a ``hyperbolic.encoder.Encoder`` (tokenizer and processor in)
    tokenizer: Any = None  # the tokenizer, or an image classifier's image processor
    device: str = "cpu"
    files: dict[str, str] = field(default_factory=dict)
    base: Path | None = None  # the base model of a PEFT adapter target
    base_files: dict[str, str] = field(default_factory=dict)
    # A model behind an endpoint (redteam.core.served.ServedModel): no weights, no files; the
    # probes get what its capabilities give (``access``).
    served: Any = None
    fingerprint: dict[str, Any] = field(default_factory=dict)  # a served model's behaviour

    @property
    def name(self) -> str:
        return self.served.model_id if self.served is not None else self.path.name

    @property
    def access(self) -> frozenset[str]:
        """What of the model the probes may use (``redteam.core.served.MODEL_ACCESS``)."""
        from redteam.core.served import IN_PROCESS_ACCESS

        if self.served is None:
            return IN_PROCESS_ACCESS
        return self.served.capabilities.access()

    @property
    def location(self) -> str:
        """The folder, or the endpoint URL (never with credentials)."""
        return self.served.client.base_url if self.served is not None else str(self.path)


@dataclass(frozen=True)
class EndpointSpec:
    """A causal LM behind an OpenAI-compatible endpoint, as the command line names it.

    ``api_key_env`` names the environment variable holding the key (the key itself is never on
    the command line nor in any record); ``cache_dir`` keeps every response, keyed by its
    request, so a re-run or ``--resume`` asks the server nothing twice.
    """

    url: str
    served_model: str | None = None
    api_key_env: str | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 4
    cache_dir: Path | None = None

    @property
    def label(self) -> str:
        """A name for the run folder before the server is asked anything."""
        from urllib.parse import urlsplit

        return self.served_model or urlsplit(self.url).hostname or "endpoint"


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
    """The target kind of a model directory, from its files (docs/architecture.md, "Adding a
    target kind")."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model path does not exist")
    if not path.is_dir():
        raise InputError(f"{path}: not a model directory (expected a folder with config.json)")
    if (path / "model_index.json").is_file():
        return "diffusion"
    if is_adapter(path):
        return "causal-lm"
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


def _device_map(device: str) -> str | dict | None:
    """``auto`` (a large model spread over every GPU) for ``cuda``; the whole model on one GPU
    for ``cuda:N`` (one process of an ``accelerate launch`` per GPU); None on the CPU."""
    if device == "cuda":
        return "auto"
    return {"": device} if device.startswith("cuda:") else None


def _checked_weights(path: Path, allow_pickle: bool) -> bool:
    """Whether ``path`` holds safetensors weights (their headers and shard index checked);
    False when only pickle weights are there and ``allow_pickle`` accepts them."""
    has_safetensors = check_weights(path, allow_pickle)
    if has_safetensors:
        check_shard_index(path)
        for file in weight_files(path)[0]:
            check_safetensors_file(file)
    return has_safetensors


def _from_pretrained(path: Path, auto_class, device: str, allow_pickle: bool, dtype):
    """Load weights with ``auto_class``: safetensors, or weights-only pickle when allowed."""
    has_safetensors = _checked_weights(path, allow_pickle)
    common = {"local_files_only": True, "trust_remote_code": False}
    attention_masks.install()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading checkpoint shards": stderr is for our lines
    hf_logging.set_verbosity_error()  # "Some weights were not used": check_loading_info says it
    try:
        if has_safetensors:
            model, info = auto_class.from_pretrained(
                path, use_safetensors=True, dtype=dtype, output_loading_info=True,
                device_map=_device_map(device), **common)
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path, **common)
            model = auto_class.from_config(config, dtype=dtype)
            missing, unexpected = model.load_state_dict(load_pickle_state_dict(path),
                                                        strict=False)
            info = {"missing_keys": missing, "unexpected_keys": unexpected}
            if hasattr(model, "tie_weights"):
                model.tie_weights()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure inside the loaders is bad input)
        raise InputError(f"{path}: model could not be loaded ({one_line(exc)})") from None
    check_loading_info(path, model, info)
    check_finite(path, model)
    if device == "cpu" or not has_safetensors:
        model.to(device)
    return model.eval()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "tokenizer.model", "spiece.model", "merges.txt")


# Prose, numbers, accents, CJK, an emoji, and a long run of words ending in punctuation (what
# makes a backtracking pre-tokenizer pattern give up)
TOKENIZER_SMOKE_TEST = ("Where was Mara Vidal born? She was born in Bergen, in 1970.\n"
                        "Answer: 42 -- naïve café, 東京, emoji 🙂. " + "word " * 60 + "?!")


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{path}: no tokenizer files (expected one of "
                         f"{', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=False)
        with native_stderr_silenced():  # a hostile pre-tokenizer panics here, not in a probe
            tokenizer(TOKENIZER_SMOKE_TEST)
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001  (a corrupt file raises anything; Rust panics)
        raise InputError(f"{path}: tokenizer could not be loaded ({one_line(exc)})") from None
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
                         f"({one_line(exc)})") from None


def load_causal_lm(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(path)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = _from_pretrained(path, AutoModelForCausalLM, device, allow_pickle, dtype)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise InputError(f"{path}: the tokenizer has {len(tokenizer):,} tokens but the model's "
                         f"embedding only {rows:,} rows (config.json vocab_size): token ids past "
                         f"it cannot be scored")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_image_classifier(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(``PixelClassifier`` wrapping the HF model with its preprocessing, the processor)."""
    import torch
    from transformers import AutoModelForImageClassification

    from redteam.core.vision import PixelClassifier

    processor = _image_processor(path)
    model = _from_pretrained(path, AutoModelForImageClassification, device, allow_pickle,
                             torch.float32)
    check_label_map(path, model.config)
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
    check_label_map(path, model.config)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # GPT-style classifiers ship without a pad token; batched queries need one.
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# The Stable Diffusion layout: component -> (library, classes accepted). A scheduler may be
# any diffusers scheduler; the safety checker and feature extractor are never loaded.
PIPELINE_COMPONENTS = {
    "unet": ("diffusers", ("UNet2DConditionModel",)),
    "vae": ("diffusers", ("AutoencoderKL",)),
    "text_encoder": ("transformers", ("CLIPTextModel",)),
    "tokenizer": ("transformers", ("CLIPTokenizer", "CLIPTokenizerFast")),
    "scheduler": ("diffusers", ()),
}
COMPONENT_NAMES = {"unet": "UNet", "vae": "autoencoder", "text_encoder": "text encoder",
                   "tokenizer": "tokenizer", "scheduler": "scheduler"}


def _pipeline_component(path: Path, index: dict, name: str) -> tuple[Path, str]:
    """The folder and class of component ``name``, checked against ``PIPELINE_COMPONENTS``."""
    library, accepted = PIPELINE_COMPONENTS[name]
    entry = index.get(name)
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
        raise InputError(f"{path}: pipeline without a {COMPONENT_NAMES[name]} (model_index.json "
                         f"names no {name}); the Stable Diffusion layout is expected")
    if entry[0] != library or (accepted and entry[1] not in accepted):
        expected = " or ".join(accepted) if accepted else "a diffusers scheduler"
        raise InputError(f"{path / 'model_index.json'}: {name}: {entry[0]}.{entry[1]} is not "
                         f"{expected}")
    folder = path / name
    if not folder.is_dir():
        raise InputError(f"{folder}: component folder missing (model_index.json names {name})")
    return folder, str(entry[1])


def _diffusers_model(folder: Path, cls, device: str, allow_pickle: bool, dtype):
    """A diffusers model from ``folder``: safetensors, or weights-only pickle when allowed."""
    has_safetensors = _checked_weights(folder, allow_pickle)
    try:
        if has_safetensors:
            model, info = cls.from_pretrained(folder, local_files_only=True,
                                              use_safetensors=True, torch_dtype=dtype,
                                              output_loading_info=True)
        else:
            model = cls.from_config(cls.load_config(folder, local_files_only=True))
            missing, unexpected = model.load_state_dict(load_pickle_state_dict(folder),
                                                        strict=False)
            info = {"missing_keys": missing, "unexpected_keys": unexpected}
            model = model.to(dtype)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure inside the loaders is bad input)
        raise InputError(f"{folder}: could not be loaded ({one_line(exc)})") from None
    check_loading_info(folder, model, info)
    check_finite(folder, model)
    return model.to(device).eval()


def load_diffusion(path: Path, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """(a ``StableDiffusionPipeline`` of the components in ``path``, its tokenizer).

    Each component is loaded by its own class from its own folder, under the rules of every
    target (safetensors, nothing fetched, no remote code); the pipeline is assembled here, so
    no safety checker is downloaded and no pipeline code named by the folder runs. bf16 on a
    GPU.
    """
    import diffusers
    import torch
    from transformers import CLIPTextModel

    diffusers.utils.logging.set_verbosity_error()  # its advice goes to stderr, ours is one line
    diffusers.utils.logging.disable_progress_bar()
    index = read_json_object(path / "model_index.json", "pipeline index")
    folders = {name: _pipeline_component(path, index, name) for name in PIPELINE_COMPONENTS}
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    unet = _diffusers_model(folders["unet"][0], diffusers.UNet2DConditionModel, device,
                            allow_pickle, dtype)
    vae = _diffusers_model(folders["vae"][0], diffusers.AutoencoderKL, device, allow_pickle,
                           dtype)
    text_encoder = _from_pretrained(folders["text_encoder"][0], CLIPTextModel, device,
                                    allow_pickle, dtype)
    tokenizer = _tokenizer(folders["tokenizer"][0])
    scheduler_folder, scheduler_class = folders["scheduler"]
    scheduler_cls = getattr(diffusers, scheduler_class, None)
    if not (isinstance(scheduler_cls, type)
            and issubclass(scheduler_cls, diffusers.SchedulerMixin)):
        raise InputError(f"{path / 'model_index.json'}: scheduler: {scheduler_class} is not a "
                         "diffusers scheduler")
    try:
        scheduler = scheduler_cls.from_pretrained(scheduler_folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001  (a corrupt scheduler config raises anything)
        raise InputError(f"{scheduler_folder}: could not be loaded ({one_line(exc)})") from None
    check_scheduler(scheduler_folder, scheduler)
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise InputError(f"{path}: the text encoder's width {text_encoder.config.hidden_size} "
                         f"is not the UNet's cross-attention width "
                         f"{unet.config.cross_attention_dim}")
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, tokenizer


def check_scheduler(folder: Path, scheduler) -> None:
    """Refuse a scheduler whose numbers are not finite (``"beta_start": NaN`` makes every
    sample NaN) or whose settings cannot make a schedule (``timestep_spacing`` unknown): both
    would surface only inside a probe, as an error or a verdict on noise."""
    import math

    import torch

    for key, value in dict(scheduler.config).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{folder}: scheduler config: {key} is {value} (not finite)")
    try:
        scheduler.set_timesteps(10)
    except Exception as exc:  # noqa: BLE001  (a bad setting raises anything)
        raise InputError(f"{folder}: scheduler config cannot make a schedule "
                         f"({one_line(exc)})") from None
    for name in ("betas", "alphas_cumprod", "sigmas"):
        values = getattr(scheduler, name, None)
        if isinstance(values, torch.Tensor) and values.is_floating_point() \
                and not bool(torch.isfinite(values).all()):
            raise InputError(f"{folder}: scheduler config gives non-finite {name}")


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SECONDS = 60
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter(path: Path) -> bool:
    """A PEFT adapter folder: ``adapter_config.json`` and no model of its own."""
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(path: Path, base: Path | None) -> Path:
    """The base model of the adapter in ``path``: ``base`` (``--base``) when given, else the
    adapter's ``base_model_name_or_path`` when that is a local folder (nothing is fetched)."""
    config = read_json_object(path / ADAPTER_CONFIG, "adapter config")
    if base is None:
        named = config.get("base_model_name_or_path")
        if not isinstance(named, str) or not named:
            raise InputError(f"{path}: adapter names no base model; pass --base DIR")
        base = Path(named) if Path(named).is_absolute() else path / named
        if not base.is_dir():
            raise InputError(f"{path}: adapter's base {named!r} is not a local folder (nothing "
                             "is downloaded); pass --base DIR")
    if not Path(base).is_dir():
        raise InputError(f"{base}: --base: base model folder not found")
    if is_adapter(Path(base)) or detect_kind(base) != "causal-lm":
        raise InputError(f"{base}: --base must be a causal LM folder")
    if config.get("peft_type") != "LORA":
        raise InputError(f"{path / ADAPTER_CONFIG}: peft_type {config.get('peft_type')!r}: "
                         "only LoRA adapters are audited (they merge into the base)")
    return Path(base)


def load_adapter_lm(path: Path, base: Path, device: str,
                    allow_pickle: bool) -> tuple[Any, Any]:
    """(the base with the LoRA adapter of ``path`` merged in, the tokenizer): audited exactly
    like the merged model. The adapter must be safetensors, and must fit the base: a tensor
    the base has no place for is refused, as a missing tensor of a model is."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = [p.name for p in weight_files(path)[1]]
        raise InputError(f"{path}: no {ADAPTER_WEIGHTS}" + (
            f" (only pickle weights: {', '.join(pickled)}; convert them to safetensors)"
            if pickled else ""))
    check_safetensors_file(weights)
    model, tokenizer = load_causal_lm(base, device, allow_pickle)
    if any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = _tokenizer(path)  # an adapter may ship the tokenizer it was trained with
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    try:
        config = LoraConfig.from_pretrained(path)
        config.inference_mode, config.base_model_name_or_path = True, str(base)
        with deadline(ADAPTER_SECONDS):  # target_modules may be a regex that never finishes
            wrapped = get_peft_model(model, config)
        result = set_peft_model_state_dict(wrapped, load_file(weights))
    except InputError:
        raise
    except BudgetExceeded:
        raise InputError(f"{path / ADAPTER_CONFIG}: target_modules: matching it against the "
                         f"base's modules took more than {ADAPTER_SECONDS} s (a pathological "
                         f"pattern?)") from None
    except Exception as exc:  # noqa: BLE001  (a malformed adapter raises anything)
        raise InputError(f"{path}: adapter does not fit the base {base} "
                         f"({one_line(exc)})") from None
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if missing:
        raise InputError(f"{weights}: missing tensor {sorted(missing)[0]} of the adapter")
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise InputError(f"{weights}: tensor {sorted(unexpected)[0]} has no place in the base "
                         f"{base} (an adapter for another model?)")
    merged = wrapped.merge_and_unload().eval()
    check_finite(weights, merged)
    return merged, tokenizer


def _audit_jsonl(path: Path, target: Target | None) -> Any:
    from redteam.core.data import load_audit_jsonl

    return load_audit_jsonl(path)


def _image_folder(path: Path, target: Target | None) -> Any:
    from redteam.core.vision import label_ids, load_image_folder

    return load_image_folder(path, target.model.size, label_ids(target.model.hf_model.config))


def _labelled_texts(path: Path, target: Target | None) -> Any:
    from redteam.core.text_data import load_labelled_texts

    return load_labelled_texts(path, target.model.config.label2id)


def _concept_prompts(path: Path, target: Target | None) -> Any:
    from redteam.core.concept_data import load_prompts

    return load_prompts(path)


def _quadruplets(path: Path, target: Target | None) -> Any:
    from hyperbolic.data import load_quadruplets

    return load_quadruplets(path)


def quadruplet_folders(rows: Any) -> dict[str, Path]:
    """The folders of the images a quadruplet file names: inputs of the run as much as the
    file itself (an ``--out --overwrite`` holding them would delete them)."""
    folders = sorted({image.parent for row in rows for image in (row.safe_image,
                                                                  row.unsafe_image)})
    return {f"folder of the data's images{'' if i == 0 else f' #{i + 1}'}": folder
            for i, folder in enumerate(folders)}


def _no_folders(data: Any) -> dict[str, Path]:
    return {}


def _hash_quadruplets(path: Path, data: Any) -> dict[str, str]:
    from hyperbolic.data import hash_quadruplets

    return hash_quadruplets(path, data)  # the JSONL and every image it names


def _hash_folder(path: Path, data: Any) -> dict[str, str]:
    return hash_tree(path)


@dataclass(frozen=True)
class TargetKind:
    """One kind of model, in one place: how its folder loads, what its audit data (``--data``)
    is, how that data loads and is hashed into the run record. The probes that apply to a kind
    are those whose ``kinds`` name it.

    ``load_data(path, target)`` gets the loaded target when ``data_needs_model`` (image and
    text labels are read against the model's); otherwise None, and the engine parses the data
    before any model loads so that bad data fails first. A kind without ``load_model`` is
    recognised but not audited yet.
    """

    name: str
    data: str
    load_model: Callable[[Path, str, bool], tuple[Any, Any]] | None = None
    load_data: Callable[[Path, Target | None], Any] | None = None
    data_needs_model: bool = False
    hash_data: Callable[[Path, Any], dict[str, str]] = _hash_folder
    data_inputs: Callable[[Any], dict[str, Path]] = _no_folders  # folders the data names


TARGET_KINDS = {kind.name: kind for kind in (
    TargetKind("causal-lm", "audit JSONL (forget / retain / holdout items)", load_causal_lm,
               _audit_jsonl),
    TargetKind("image-classifier", "a folder of images, one sub-folder per class",
               load_image_classifier, _image_folder, data_needs_model=True),
    TargetKind("text-classifier", "labelled-text JSONL ({\"text\", \"label\"})",
               load_text_classifier, _labelled_texts, data_needs_model=True),
    TargetKind("clip", "ViSU quadruplet JSONL", load_clip_encoder, _quadruplets,
               hash_data=_hash_quadruplets, data_inputs=quadruplet_folders),
    TargetKind("hysac", "ViSU quadruplet JSONL", load_hysac_encoder, _quadruplets,
               hash_data=_hash_quadruplets, data_inputs=quadruplet_folders),
    TargetKind("diffusion", "prompts: text, one per line, or CSV with a prompt column",
               load_diffusion, _concept_prompts),
)}
SUPPORTED_KINDS = tuple(name for name, kind in TARGET_KINDS.items() if kind.load_model)


def _file_stats(path: Path) -> dict[str, tuple[int, int, int]]:
    """Size, modification time and inode of every file under ``path``."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = {str(f): f.stat() for f in files}
    return {name: (st.st_size, st.st_mtime_ns, st.st_ino) for name, st in stats.items()}


def _check_unchanged(path: Path, before: dict[str, tuple[int, int, int]]) -> None:
    """The run record names the files' SHA-256, hashed before the loader read them: refuse the
    model when any file changed (or appeared, or went) between the hashing and the loading, so
    the record always names what was audited."""
    after = _file_stats(path)
    if after != before:
        changed = sorted(set(after) ^ set(before) | {k for k in after
                                                     if k in before and after[k] != before[k]})
        raise InputError(f"{path}: {changed[0]} changed while it was hashed and loaded; audit "
                         f"a copy no one is writing to")


def load_target(
    path: str | Path,
    kind: str | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
    base: Path | None = None,
) -> Target:
    """Detect (or check) the kind of ``path``, load it safely, and hash every file (refused when
    a file changes between the hashing and the loading, ``_check_unchanged``).

    A PEFT adapter folder loads onto ``base`` (or the local folder its config names) and is
    merged into it; both folders are hashed.
    """
    path = Path(path)
    if path.is_dir() and is_adapter(path):
        if kind not in (None, "causal-lm"):
            raise InputError(f"{path}: a PEFT adapter (a causal LM), not kind {kind}")
        base_path = adapter_base(path, base)
        before = _file_stats(path), _file_stats(base_path)
        files, base_files = hash_tree(path), hash_tree(base_path)
        model, tokenizer = load_adapter_lm(path, base_path, device, allow_pickle)
        _check_unchanged(path, before[0])
        _check_unchanged(base_path, before[1])
        return Target(path=path, kind="causal-lm", model=model, tokenizer=tokenizer,
                      device=device, files=files, base=base_path, base_files=base_files)
    detected = detect_kind(path)
    kind = kind or detected
    if kind not in TARGET_KINDS:
        raise InputError(f"--kind {kind}: unknown kind (known: {', '.join(TARGET_KINDS)})")
    if kind not in SUPPORTED_KINDS:
        raise UnsupportedKindError(
            f"{path}: kind {kind} is not supported yet in this release "
            f"(supported: {', '.join(SUPPORTED_KINDS)})"
        )
    before = _file_stats(path)
    files = hash_tree(path)
    model, preprocessor = TARGET_KINDS[kind].load_model(path, device, allow_pickle)
    _check_unchanged(path, before)
    return Target(path=path, kind=kind, model=model, tokenizer=preprocessor, device=device,
                  files=files)


def load_served_target(spec: EndpointSpec, quiet: bool = True) -> Target:
    """The model ``spec`` names, its capabilities found by asking (``ServedModel.discover``),
    its tokenizer where the server offers one, and its behavioural fingerprint, which stands
    in for the hashes of weights that cannot be seen."""
    from redteam.core.http import EndpointClient, api_key_from
    from redteam.core.served import ServedModel, ServedScorer, ServedTokenizer
    from redteam.core.served import behavioural_fingerprint as fingerprint_of

    client = EndpointClient(spec.url, api_key=api_key_from(spec.api_key_env),
                            concurrency=spec.concurrency, timeout_s=spec.timeout_s,
                            retries=spec.retries, cache_dir=spec.cache_dir, quiet=quiet)
    served = ServedModel.discover(client, spec.served_model)
    if not served.capabilities.completions:
        raise InputError(f"{client.base_url}: model {served.model_id!r} answers no "
                         "/completions requests, which every LLM probe needs")
    tokenizer = ServedTokenizer(served) if served.capabilities.tokenize else None
    fingerprint = fingerprint_of(ServedScorer(served, tokenizer))
    return Target(path=Path(served.model_id), kind="causal-lm", model=served,
                  tokenizer=tokenizer, served=served, fingerprint=fingerprint)
