"""A small text-to-image diffusion pipeline trained here, for the concept-erasure demo and tests.

The pictures are scikit-learn's 8×8 handwritten digits, upsampled to 16×16 and coloured; the
prompts name the digit and its colour ("a red digit three"). The pipeline has the Stable
Diffusion layout, so it loads, audits and erases exactly as a real one: a CLIP tokenizer (a
byte-pair vocabulary of the prompt words and the letters), a CLIP text encoder, a KL autoencoder
(16×16 pixels to a 4×8×8 latent), a cross-attention UNet and a DDIM scheduler, written with
``save_pretrained`` as safetensors.

Training, in order: the autoencoder on the coloured digits; then the UNet and the text encoder
together on the latents, with the usual noise-prediction loss and one caption in ten left empty
(for classifier-free guidance). A digits classifier on the same coloured pictures is the judge.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from redteam.core.training import fixed_threads

IMAGE_SIZE = 16
MAX_TOKENS = 16  # the tokenizer's model_max_length: start + prompt + end, padded
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = {"red": (1.0, 0.25, 0.2), "green": (0.25, 1.0, 0.3), "blue": (0.3, 0.45, 1.0),
           "yellow": (1.0, 0.95, 0.25), "white": (1.0, 1.0, 1.0)}
TEMPLATES = ("a {colour} digit {name}", "the number {name} in {colour}", "a {colour} {name}")
# Words of the vocabulary no caption uses: random and optimised prefixes draw from them too.
OTHER_WORDS = ("photo", "drawing", "of", "with", "and", "on", "black", "background", "bright",
               "small", "large", "picture", "sketch", "shape", "line", "curve", "letter", "sign")
START, END = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class PipelineSettings:
    """How long each part of the pipeline trains (``demo`` and ``test`` sizes)."""

    autoencoder_steps: int
    unet_steps: int
    judge_epochs: int
    erase_iterations: int = 200
    batch_size: int = 32
    lr: float = 3e-3


SETTINGS = {"demo": PipelineSettings(autoencoder_steps=200, unet_steps=400, judge_epochs=3,
                                     erase_iterations=150),
            "test": PipelineSettings(autoencoder_steps=150, unet_steps=350, judge_epochs=2,
                                     erase_iterations=40)}


def caption(label: int, colour: str, template: int = 0) -> str:
    return TEMPLATES[template].format(colour=colour, name=DIGIT_NAMES[label])


def typical_digits(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``per_class`` digits of each class nearest its mean image, white on black at 16×16
    (a small model on two CPU cores learns a few typical shapes per word, not every hand)."""
    from redteam.zoo.digits import digit_images

    white, labels = digit_images()
    gray = nn.functional.interpolate(white[:, :1], size=(IMAGE_SIZE, IMAGE_SIZE),
                                     mode="bilinear", align_corners=False).clamp(0, 1)
    chosen = []
    for label in range(10):
        members = (labels == label).nonzero().flatten()
        distance = (gray[members] - gray[members].mean(0)).flatten(1).norm(dim=1)
        chosen.append(members[distance.argsort()[:per_class]])
    index = torch.cat(chosen)
    return gray[index], labels[index]


def coloured_digits(per_class: int = 40) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The typical digits once in each colour: ``[N, 3, 16, 16]`` in [0, 1], labels, colour
    names."""
    gray, labels = typical_digits(per_class)
    images, all_labels, colours = [], [], []
    for name, rgb in COLOURS.items():
        images.append(gray * torch.tensor(rgb).view(1, 3, 1, 1))
        all_labels.append(labels)
        colours += [name] * len(labels)
    return torch.cat(images), torch.cat(all_labels), colours


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's byte-pair merge of one word: the lowest-ranked adjacent pair first."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, 1 << 30), i, pair)
                 for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, _, pair = min(pairs)
        if rank == 1 << 30:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer whose every prompt word is one token: letters and digits (alone and
    word-final), then merges that join each word, added so that earlier words stay whole."""
    from transformers import CLIPTokenizer

    # In a fixed order: the ids (and so the text encoder's initial embedding of each word)
    # must not depend on the process's string hashing, as a set's order does.
    words = [*DIGIT_NAMES, *COLOURS, *(w for t in TEMPLATES for w in t.split() if "{" not in w),
             *OTHER_WORDS]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = [*alphabet, *(c + "</w>" for c in alphabet)]
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        symbols = _bpe(word, ranks)
        while len(symbols) > 1:
            ranks[(symbols[0], symbols[1])] = len(ranks)
            vocab.append(symbols[0] + symbols[1])
            symbols = _bpe(word, ranks)
    vocab = [*dict.fromkeys(vocab), START, END]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    merges = ["#version: 0.2", *(f"{a} {b}" for (a, b), _ in sorted(ranks.items(),
                                                                   key=lambda kv: kv[1]))]
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(folder / "vocab.json", folder / "merges.txt",
                              model_max_length=MAX_TOKENS, pad_token=END)
    tokenizer.save_pretrained(folder)


def untrained_pipeline(tokenizer_dir: Path, seed: int = 0):
    """The pipeline's components at initialisation (the tokenizer read from ``tokenizer_dir``)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    # Words start far apart (CLIP's own initialisation, std 0.02, leaves every caption nearly
    # the same text state, and a small UNet then learns the colour long before the digit).
    with torch.no_grad():
        text_encoder.text_model.embeddings.token_embedding.weight.normal_(0.0, 1.0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                        sample_size=IMAGE_SIZE, norm_num_groups=8, layers_per_block=1)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D",) * 2,
        up_block_types=("CrossAttnUpBlock2D",) * 2, cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=16,
        # The pooled text is also added to the timestep embedding (as Kandinsky's UNets do):
        # a global conditioning that a small model learns in minutes, not hours.
        addition_embed_type="text", addition_embed_type_num_heads=4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def _batches(count: int, size: int, steps: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield torch.randint(0, count, (size,), generator=generator)


def train_autoencoder(vae, images: torch.Tensor, settings: PipelineSettings, seed: int = 0,
                      quiet: bool = True):
    """Reconstruction (MSE) with a small KL term; then the latent scaling factor is set so the
    latents have unit variance, as Stable Diffusion's 0.18215 does."""
    from tqdm.auto import tqdm

    optimizer = torch.optim.Adam(vae.parameters(), lr=settings.lr)
    vae.train()
    progress = tqdm(total=settings.autoencoder_steps, desc="train autoencoder", disable=quiet,
                    leave=False)
    for batch in _batches(len(images), settings.batch_size, settings.autoencoder_steps, seed):
        x = images[batch] * 2 - 1
        posterior = vae.encode(x).latent_dist
        loss = (vae.decode(posterior.sample()).sample - x).pow(2).mean()
        loss = loss + 1e-5 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.update(1)
    progress.close()
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(images[:512] * 2 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


def encode_captions(pipeline, captions: list[str]) -> torch.Tensor:
    """The text encoder's last hidden states for ``captions``, padded as the pipeline pads."""
    tokens = pipeline.tokenizer(captions, padding="max_length", truncation=True,
                                max_length=pipeline.tokenizer.model_max_length,
                                return_tensors="pt")
    return pipeline.text_encoder(tokens.input_ids)[0]


def train_denoiser(pipeline, images: torch.Tensor, labels: torch.Tensor, colours: list[str],
                   settings: PipelineSettings, seed: int = 0, quiet: bool = True):
    """The UNet and the text encoder on noise prediction, captions drawn from the templates."""
    from tqdm.auto import tqdm

    vae, unet, text_encoder = pipeline.vae, pipeline.unet, pipeline.text_encoder
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i:i + 512] * 2 - 1).latent_dist.mean
                             for i in range(0, len(images), 512)]) * vae.config.scaling_factor
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=settings.unet_steps)
    rng = random.Random(seed)
    noise_generator = torch.Generator().manual_seed(seed + 1)
    steps = pipeline.scheduler.config.num_train_timesteps
    unet.train()
    text_encoder.train()
    progress = tqdm(total=settings.unet_steps, desc="train denoiser", disable=quiet, leave=False)
    for batch in _batches(len(images), settings.batch_size, settings.unet_steps, seed):
        captions = ["" if rng.random() < 0.1 else
                    caption(int(labels[i]), colours[i], rng.randrange(len(TEMPLATES)))
                    for i in batch.tolist()]
        x0 = latents[batch]
        noise = torch.randn(x0.shape, generator=noise_generator)
        t = torch.randint(0, steps, (len(batch),), generator=noise_generator)
        noisy = pipeline.scheduler.add_noise(x0, noise, t)
        predicted = unet(noisy, t, encode_captions(pipeline, captions)).sample
        loss = (predicted - noise).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    progress.close()
    unet.eval()
    text_encoder.eval()
    return pipeline


ERASED_DIGIT = 3  # the concept the demo erases: the digit three, in every colour
ERASE_SETTINGS = {"method": "esd-u", "lr": 4e-4, "eta": 1.0, "sample_steps": 20}
ZOO_VERSION = "1"


def concept_prompts(digit: int = ERASED_DIGIT) -> list[str]:
    """Every caption naming ``digit``: each template in each colour."""
    return [caption(digit, colour, template) for template in range(len(TEMPLATES))
            for colour in COLOURS]


def builder_version() -> str:
    import hashlib

    import defenses.unlearning.esd as esd
    import redteam.core.diffusion as operations

    digest = hashlib.sha256(ZOO_VERSION.encode())
    for source in (Path(__file__), Path(esd.__file__), Path(operations.__file__)):
        digest.update(source.read_bytes())
    return f"v{ZOO_VERSION}-{digest.hexdigest()[:10]}"


def _judge(path: Path, settings: PipelineSettings, seed: int, quiet: bool) -> float:
    """A digits classifier on every coloured digit (not only the typical ones the pipeline
    learns), saved as an image-classifier folder; returns its held-out accuracy."""
    from redteam.core.classifiers import small_classifier
    from redteam.core.fileio import atomic_dir
    from redteam.core.training import train_classifier
    from redteam.core.vision import PixelClassifier

    images, labels, _ = coloured_digits(per_class=10_000)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    held_out, train = order[:500], order[500:]
    hf_model, processor = small_classifier("resnet", IMAGE_SIZE, 10, seed)
    model = train_classifier(PixelClassifier(hf_model, processor), images[train],
                             labels[train], epochs=settings.judge_epochs, seed=seed,
                             quiet=quiet)
    with torch.no_grad():
        accuracy = float((model(images[held_out]).argmax(-1) == labels[held_out])
                         .float().mean())
    with atomic_dir(path) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return round(accuracy, 4)


@fixed_threads()
def build_concept_zoo(root: Path | None = None, size: str = "demo", seed: int = 0,
                      quiet: bool = True) -> dict[str, Path]:
    """Build what is missing; return the paths ``original`` (the pipeline), ``erased`` (ESD
    of the digit three, written by ``redteam erase``'s back-end), ``judge`` (the digits
    classifier), ``prompts`` (every caption naming three) and ``zoo.json``."""
    import time

    from redteam.commands.erase import erase_concept
    from redteam.core.fileio import atomic_dir, atomic_write_json
    from redteam.zoo.build import zoo_home

    if size not in SETTINGS:
        raise ValueError(f"unknown zoo size {size!r}; choose from {sorted(SETTINGS)}")
    settings = SETTINGS[size]
    home = (Path(root) if root is not None else zoo_home()) / \
        f"concept-{size}-seed{seed}-{builder_version()}"
    paths = {name: home / name for name in ("original", "erased", "judge")}
    paths["prompts"], paths["zoo.json"] = home / "prompts.txt", home / "zoo.json"
    if all(p.exists() for p in paths.values()):
        return paths
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not paths["original"].exists():
        with atomic_dir(home / "tokenizer") as tmp:
            write_tokenizer(tmp)
        pipeline = untrained_pipeline(home / "tokenizer", seed)
        images, labels, colours = coloured_digits()
        train_autoencoder(pipeline.vae, images, settings, seed, quiet)
        train_denoiser(pipeline, images, labels, colours, settings, seed, quiet)
        with atomic_dir(paths["original"]) as tmp:
            pipeline.save_pretrained(tmp, safe_serialization=True)
        timings["original"] = round(time.perf_counter() - started, 1)
    judge_accuracy = None
    if not paths["judge"].exists():
        judge_accuracy = _judge(paths["judge"], settings, seed, quiet)
    if not paths["erased"].exists():
        started = time.perf_counter()
        erase_concept(paths["original"], f"digit {DIGIT_NAMES[ERASED_DIGIT]}", paths["erased"],
                      iterations=settings.erase_iterations, seed=seed, device="cpu",
                      quiet=quiet, **ERASE_SETTINGS)
        timings["erased"] = round(time.perf_counter() - started, 1)
    paths["prompts"].write_text("\n".join(concept_prompts()) + "\n")
    atomic_write_json(paths["zoo.json"], {
        "size": size, "seed": seed, "builder_version": builder_version(),
        "erased_digit": ERASED_DIGIT,
        "erase": {**ERASE_SETTINGS, "iterations": settings.erase_iterations},
        "training": {"autoencoder_steps": settings.autoencoder_steps,
                     "unet_steps": settings.unet_steps, "judge_epochs": settings.judge_epochs},
        "judge_held_out_accuracy": judge_accuracy, "timings_s": timings})
    return paths
