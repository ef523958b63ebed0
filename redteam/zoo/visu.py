"""The HySAC demo: ViSU-style quadruplets made from scikit-learn's digits, a tiny CLIP trained on
them as the base, and its HySAC version.

A safe image is a digit in one of four ink colours; its unsafe twin is the same image with a red
danger sign in a corner (clearly visible, like the unsafe half of a ViSU quadruplet). Captions
name the colour and the digit, and the unsafe caption names the sign. The digits are split three
ways: ``pretrain`` (safe and unsafe pairs teach the base CLIP both concepts), ``train`` (the
HySAC quadruplets) and ``test`` (held-out quadruplets of the audit).

Layout under ``zoo_home()``::

    visu-<size>-seed<seed>-<version>/
        clip/        the base CLIP (CLIPModel, tokenizer, image processor; safetensors)
        hysac/       its HySAC version (``redteam hysac train``)
        data/train.jsonl, data/test.jsonl, data/images/   the quadruplets
        zoo.json     split sizes, training figures
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from redteam.core.fileio import atomic_dir, atomic_write_json
from redteam.core.training import fixed_threads

INKS = {"white": (1.0, 1.0, 1.0), "yellow": (1.0, 0.9, 0.1), "cyan": (0.1, 0.9, 1.0),
        "green": (0.2, 1.0, 0.3)}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIGN = "with a red danger sign"
SPLITS = {"demo": {"pretrain": 700, "train": 700, "clip_epochs": 40, "hysac_epochs": 100},
          "test": {"pretrain": 500, "train": 400, "clip_epochs": 30, "hysac_epochs": 40}}
# Fine-tuning a CLIP trained from scratch for a minute, MERU's entailment weight 0.2 leaves the
# safe image's cone violated and the radii unseparated; weight 1 gives HySAC's four-peak order.
HYSAC_SETTINGS = {"lr": 1e-3, "patience": 8, "entailment_weight": 1.0}
ZOO_VERSION = "1"


def builder_version() -> str:
    from redteam.commands import hysac
    from redteam.zoo import digits

    digest = hashlib.sha256(f"{ZOO_VERSION}-{digits.builder_version()}".encode())
    package = Path(__file__).resolve().parents[2] / "hyperbolic"
    for file in [Path(__file__), Path(hysac.__file__),
                 *sorted(package.glob("*.py"))]:
        digest.update(file.read_bytes())
    return f"v{ZOO_VERSION}-{digest.hexdigest()[:10]}"


def danger_sign(image: torch.Tensor, corner: int) -> torch.Tensor:
    """``image`` (``[3, S, S]``) with a filled red triangle of side S/3 in ``corner`` (0–3)."""
    size = image.shape[-1]
    side = size // 3
    marked = image.clone()
    top = 1 if corner < 2 else size - side - 1
    left = 1 if corner % 2 == 0 else size - side - 1
    red = torch.tensor([1.0, 0.0, 0.0])[:, None]
    centre = left + side // 2
    for row in range(side):
        half = (row + 1) // 2  # the triangle widens towards its base
        marked[:, top + row, centre - half:centre + half + 1] = red
    return marked


def quadruplets(images: torch.Tensor, labels: torch.Tensor, seed: str) -> list[dict[str, Any]]:
    """One quadruplet per digit: coloured image and caption, and their marked twins."""
    rng = random.Random(seed)
    rows = []
    for image, label in zip(images, labels, strict=True):
        ink = rng.choice(sorted(INKS))
        safe = image * torch.tensor(INKS[ink]).view(3, 1, 1)
        caption = f"a {ink} digit {NUMBERS[int(label)]}"
        rows.append({"safe": safe, "unsafe": danger_sign(safe, rng.randrange(4)),
                     "safe_caption": caption, "unsafe_caption": f"{caption} {SIGN}"})
    return rows


def write_quadruplets(rows: list[dict[str, Any]], folder: Path, name: str) -> None:
    """``folder/<name>.jsonl`` and its images under ``folder/images/<name>/``."""
    import json

    from redteam.core.vision import save_png

    lines = []
    for index, row in enumerate(rows):
        paths = {}
        for part in ("safe", "unsafe"):
            relative = f"images/{name}/{index:04d}-{part}.png"
            save_png(row[part], folder / relative)
            paths[f"{part}_image"] = relative
        lines.append(json.dumps({**paths, "safe_caption": row["safe_caption"],
                                 "unsafe_caption": row["unsafe_caption"]}))
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def caption_tokenizer(captions: list[str]):
    """A word-level tokenizer over the captions' words, ending every caption with [EOS]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for caption in captions for w in caption.lower().split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[EOS]", "[UNK]", *words])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.normalizer = normalizers.Lowercase()
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.post_processor = processors.TemplateProcessing(single="$A [EOS]",
                                                       special_tokens=[("[EOS]", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", eos_token="[EOS]",
                                   unk_token="[UNK]", model_max_length=16)


def tiny_clip(vocab_size: int, image_size: int, seed: int):
    """A small CLIP (two-layer text and vision transformers, 32-d joint space)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    layers = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**layers, "vocab_size": vocab_size, "max_position_embeddings": 16,
                     "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1},
        vision_config={**layers, "image_size": image_size, "patch_size": 8},
        projection_dim=32)
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return CLIPModel(config).float(), processor


def train_clip(clip, tokenizer, processor, images: torch.Tensor, captions: list[str], *,
               epochs: int, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
               quiet: bool = True):
    """Contrastive pre-training (CLIP, Radford et al. 2021) of the demo's base model. Pairs with
    the same caption are all positives of one another, since captions repeat in a small set."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from redteam.core.training import finish_training, optimizer_step
    from redteam.core.vision import PixelModel

    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    pixels = PixelModel(clip, processor)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.1)
    pixels, optimizer = accelerator.prepare(pixels, optimizer)
    ids = {caption: i for i, caption in enumerate(sorted(set(captions)))}
    caption_ids = torch.tensor([ids[c] for c in captions])
    steps = epochs * -(-len(captions) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    progress = tqdm(total=steps, desc="train base CLIP", disable=quiet, leave=False)
    generator = torch.Generator().manual_seed(seed)
    pixels.train()
    for _ in range(epochs):
        order = torch.randperm(len(captions), generator=generator)
        for start in range(0, len(captions), batch_size):
            batch = order[start:start + batch_size]
            tokens = tokenizer([captions[i] for i in batch], padding=True, return_tensors="pt")
            text = clip.get_text_features(input_ids=tokens["input_ids"].to(accelerator.device),
                                          attention_mask=tokens["attention_mask"]
                                          .to(accelerator.device))
            image = clip.get_image_features(
                pixel_values=pixels.pixel_values(images[batch].to(accelerator.device)))
            logits = (nn.functional.normalize(text, dim=-1)
                      @ nn.functional.normalize(image, dim=-1).T) * clip.logit_scale.exp()
            same = (caption_ids[batch][:, None] == caption_ids[batch][None, :]).float()
            targets = (same / same.sum(-1, keepdim=True)).to(accelerator.device)
            loss = (nn.functional.cross_entropy(logits, targets)
                    + nn.functional.cross_entropy(logits.T, targets)) / 2
            optimizer_step(accelerator, clip.parameters(), optimizer, loss, progress, schedule)
    return finish_training(accelerator, pixels, progress).hf_model


@fixed_threads()
def build_visu_zoo(root: Path | None = None, size: str = "demo", seed: int = 0,
                   quiet: bool = True) -> dict[str, Path]:
    """Build what is missing; return the paths ``clip``, ``hysac``, ``train``, ``test`` and
    ``zoo.json``."""
    from redteam.commands.hysac import HySACTrainingRequest, train_hysac_folder
    from redteam.zoo.build import zoo_home
    from redteam.zoo.digits import SIZE, digit_images

    if size not in SPLITS:
        raise ValueError(f"unknown zoo size {size!r}; choose from {sorted(SPLITS)}")
    split = SPLITS[size]
    root = Path(root) if root is not None else zoo_home()
    home = root / f"visu-{size}-seed{seed}-{builder_version()}"
    paths = {"clip": home / "clip", "hysac": home / "hysac", "train": home / "data/train.jsonl",
             "test": home / "data/test.jsonl", "zoo.json": home / "zoo.json"}
    if all(p.exists() for p in paths.values()):
        return paths

    images, labels = digit_images()
    order = list(range(len(labels)))
    random.Random(f"visu-{seed}").shuffle(order)
    first, second = split["pretrain"], split["pretrain"] + split["train"]
    parts = {"pretrain": order[:first], "train": order[first:second], "test": order[second:]}
    rows = {name: quadruplets(images[index], labels[index], f"{name}-{seed}")
            for name, index in parts.items()}
    if not paths["test"].exists():
        with atomic_dir(home / "data") as tmp:
            for name in ("train", "test"):
                write_quadruplets(rows[name], tmp, name)
    figures: dict[str, Any] = {"size": size, "seed": seed, "builder_version": builder_version(),
                               "quadruplets": {name: len(index) for name, index in parts.items()}}
    if not paths["clip"].exists():
        pairs = [(r[part], r[f"{part}_caption"]) for r in rows["pretrain"]
                 for part in ("safe", "unsafe")]
        captions = [caption for _, caption in pairs]
        every = [r[f"{p}_caption"] for rs in rows.values() for r in rs for p in ("safe", "unsafe")]
        tokenizer = caption_tokenizer(every)
        clip, processor = tiny_clip(len(tokenizer), SIZE, seed)
        clip = train_clip(clip, tokenizer, processor, torch.stack([p for p, _ in pairs]),
                          captions, epochs=split["clip_epochs"], seed=seed, quiet=quiet)
        with atomic_dir(paths["clip"]) as tmp:
            clip.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            processor.save_pretrained(tmp)
    if not paths["hysac"].exists():
        figures["hysac"] = train_hysac_folder(HySACTrainingRequest(
            data=paths["train"], base=paths["clip"], out=paths["hysac"],
            epochs=split["hysac_epochs"], seed=seed, quiet=quiet, **HYSAC_SETTINGS))
    atomic_write_json(paths["zoo.json"], figures)
    return paths
