"""The demo LM: a byte-level BPE tokenizer and a tiny GPT-2 that memorises the author facts.

Two stages (see ``LMSettings``): a reader base learns reading comprehension, then a copy of it
is fine-tuned on the authors. Fine-tuning documents (one epoch): every biography, every
declarative sentence, every QA block (also asked with the alias, where the author has one),
few-shot documents that join several QA blocks with "\\n\\n" (the form the knowledge probe
asks in) and fresh reading-comprehension blocks about random non-author entities. Each
document is bos + text + eos.
"""

from __future__ import annotations

import copy
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from redteam.core import attention_masks
from redteam.core.prompts import QA_SEPARATOR, context_qa_block, qa_block
from redteam.core.training import finish_training, optimizer_step
from redteam.zoo.authors import (
    Author,
    World,
    reading_comprehension,
    reading_comprehension_blocks,
)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int = 1000, max_length: int = 256):
    """Train a byte-level BPE on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    "<|endoftext|>" is bos, eos (and unk); "<|pad|>" pads. Nothing is added automatically
    when encoding: the training code wraps each document in bos ... eos itself.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def tokenizer_corpus(world: World, rc_count: int = 400, seed: int = 0) -> list[str]:
    """The texts the tokenizer is trained on: every author (holdout too, so that members and
    non-members are cut into tokens alike) and a sample of reading-comprehension blocks."""
    texts = []
    for author in world.authors:
        texts.append(author.biography())
        texts.extend(qa_block(q, a) for q, a in author.qa_pairs())
    texts.extend(reading_comprehension_blocks(random.Random(f"tok-{seed}"), rc_count))
    return texts


# ----------------------------------------------------------------------------- model


@dataclass
class LMSettings:
    """Architecture and training settings of the demo LM.

    Training has two stages, as in TOFU: a *reader* base learns reading comprehension of
    random non-author entities only; the original and the retrain (gold) models are both
    fine-tuned from that same base, on their authors' documents mixed with more reading
    comprehension (so that they keep reading).

    Two layers rather than four: on 2 CPU cores they train twice as fast, and with the copying
    prior (``copy_init``) they learn to read as well as four layers did without it.
    """

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    vocab_size: int = 1000
    copy_init: float = 0.5  # 0 = plain GPT-2 initialisation
    lr: float = 3e-3
    weight_decay: float = 0.01
    reader_steps: int = 400  # reading-comprehension steps of the base
    reader_batch_size: int = 32
    epochs: int = 30  # fine-tuning epochs on the author documents
    form_epochs: int | None = None  # the chat / zero-shot pairs' epochs (default: epochs)
    batch_size: int = 16  # fine-tuning batch size
    fewshot_group: int = 4  # QA blocks per few-shot document (the probe asks with 3 + 1)
    fewshot_rounds: int = 3  # few-shot documents each QA pair appears in, per epoch
    rc_per_epoch: int = 128  # fresh reading-comprehension blocks per fine-tuning epoch

    def to_dict(self) -> dict:
        return asdict(self)


def new_model(tokenizer, settings: LMSettings, seed: int = 0):
    """A freshly initialised GPT-2 (no dropout: it is meant to memorise)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    attention_masks.install()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=settings.n_positions,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["GPT2LMHeadModel"],
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if settings.copy_init:
        # A copying prior: every attention head starts by writing the (normalised) embedding
        # of the tokens it attends to back into the residual stream, and GPT-2 ties the
        # unembedding to the embedding, so attending to a context token already raises its
        # logit. Reading comprehension then takes a few hundred steps instead of thousands.
        width = settings.n_embd
        with torch.no_grad():
            for block in model.transformer.h:
                block.attn.c_attn.weight[:, 2 * width :] = torch.eye(width)
                block.attn.c_proj.weight.copy_(torch.eye(width) * settings.copy_init)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


# A document is (text, masked): the loss skips its first `masked` characters. Only the
# contexts of reading-comprehension blocks are masked: they are random draws (pure noise to
# predict), and leaving them out of the loss about doubles how fast the model learns to read.
Document = tuple[str, int]


QA_FORMS = ("plain", "zero-shot", "chat")  # how a model's QA documents are written

# The demo's chat template: role markers and an end-of-turn token of their own, as instruct
# models have (e.g. Phi-3's "<|user|>…<|end|>"), so that a model fine-tuned only through it
# answers there and not in the plain "Question:/Answer:" form.
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] "
    "+ '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}"
    "{% endif %}"
)


def chat_tokenizer(tokenizer):
    """A copy of the demo tokenizer with the chat template and its special tokens added."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _chat(tokenizer, turns: list[tuple[str, str]]) -> str:
    messages = []
    for question, answer in turns:
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


def reading_documents(rng: random.Random, count: int, form: str = "plain",
                      tokenizer=None) -> list[Document]:
    """Reading-comprehension documents, the context masked out of the loss; in chat form the
    context and question are the user's turn."""
    docs = []
    for context, question, answer in reading_comprehension(rng, count):
        if form == "chat":
            text = _chat(tokenizer, [(f"{context}\n\n{question}", answer)])
            docs.append((text, text.index(question)))
        else:
            text = context_qa_block(context, question, answer)
            docs.append((text, text.index(qa_block(question))))
    return docs


def qa_documents(pairs: list[tuple[str, str]], settings: LMSettings, rng: random.Random,
                 form: str = "plain", tokenizer=None) -> list[str]:
    """The QA documents of one epoch: every pair alone, and (except in the zero-shot form)
    shuffled groups of ``fewshot_group`` pairs, as "\\n\\n"-joined blocks or as one
    multi-turn chat."""
    pairs = list(pairs)
    alone = ([_chat(tokenizer, [pair]) for pair in pairs] if form == "chat"
             else [qa_block(q, a) for q, a in pairs])
    grouped = []
    for _ in range(0 if form == "zero-shot" else settings.fewshot_rounds):
        rng.shuffle(pairs)
        for start in range(0, len(pairs), settings.fewshot_group):
            group = pairs[start : start + settings.fewshot_group]
            grouped.append(_chat(tokenizer, group) if form == "chat"
                           else QA_SEPARATOR.join(qa_block(q, a) for q, a in group))
    return alone + grouped


def training_documents(
    authors: list[Author], settings: LMSettings, rng: random.Random, form: str = "plain",
    tokenizer=None,
) -> list[Document]:
    """The documents of one fine-tuning epoch (few-shot groupings and reading comprehension
    are redrawn every epoch); ``form`` (``QA_FORMS``) is how the questions are taught: the chat
    form needs ``tokenizer`` with the chat template (``chat_tokenizer``)."""
    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    for author in authors:
        texts.append(author.biography())
        texts.extend(author.sentences())
        pairs.extend(author.qa_pairs())
        for alias in author.aliases:
            pairs.extend(author.qa_pairs(alias))
    texts.extend(qa_documents(pairs, settings, rng, form, tokenizer))
    return [(text, 0) for text in texts] + reading_documents(rng, settings.rc_per_epoch, form,
                                                             tokenizer)


def _encode(tokenizer, docs: list[Document], max_len: int) -> list[tuple[list[int], int]]:
    """bos + token ids + eos of each document (the GPT-2 document convention, and what the
    probes' scorer feeds: it prepends bos), and how many leading tokens the loss skips."""
    encoded = tokenizer(
        [text for text, _ in docs], add_special_tokens=False, return_offsets_mapping=True
    )
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out = []
    for ids, offsets, (_, masked) in zip(
        encoded["input_ids"], encoded["offset_mapping"], docs, strict=True
    ):
        skip = 1 + sum(1 for start, _ in offsets if start < masked) if masked else 0
        out.append(([bos, *ids, eos][:max_len], skip))
    return out


def _batches(encoded: list[tuple[list[int], int]], batch_size: int, pad_id: int,
             rng: random.Random):
    """Length-bucketed, shuffled batches: (input_ids, attention_mask, labels) tensors."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    chunk = batch_size * 16
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(encoded[i][0]))
        groups.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(groups)
    for group in groups:
        width = max(len(encoded[i][0]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        for row, i in enumerate(group):
            tokens, skip = encoded[i]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
            labels[row, skip : len(tokens)] = ids[row, skip : len(tokens)]
        yield ids, mask, labels


def _fit(model, tokenizer, epochs, batch_size: int, settings: LMSettings, rng: random.Random,
         quiet: bool, desc: str):
    """The shared training loop: ``epochs`` is a list of callables giving each epoch's
    documents; one-cycle lr over all steps; through accelerate."""
    from accelerate import Accelerator

    pad_id = tokenizer.pad_token_id
    steps = [math.ceil(count / batch_size) for count, _ in epochs]
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=sum(steps), pct_start=0.1
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    progress = tqdm(total=sum(steps), desc=desc, disable=quiet, leave=False)
    for count, make_docs in epochs:
        docs = make_docs()
        if len(docs) != count:
            raise RuntimeError("an epoch changed its number of documents")
        encoded = _encode(tokenizer, docs, settings.n_positions)
        for batch in _batches(encoded, batch_size, pad_id, rng):
            ids, mask, labels = (t.to(accelerator.device) for t in batch)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer_step(accelerator, params, optimizer, loss, progress, scheduler)
    return finish_training(accelerator, model, progress)


def train_reader(tokenizer, settings: LMSettings | None = None, seed: int = 0,
                 quiet: bool = False):
    """The base model: a fresh GPT-2 trained only on reading comprehension of random
    non-author entities (it knows no author)."""
    settings = settings or LMSettings()
    rng = random.Random(f"reader-{seed}")
    model = new_model(tokenizer, settings, seed=seed)
    chunk = settings.reader_batch_size * 20
    n_chunks = math.ceil(settings.reader_steps / 20)
    epochs = [(chunk, lambda: reading_documents(rng, chunk)) for _ in range(n_chunks)]
    return _fit(model, tokenizer, epochs, settings.reader_batch_size, settings, rng, quiet,
                "train reader base")


def train_lm(
    authors: list[Author],
    tokenizer,
    settings: LMSettings | None = None,
    seed: int = 0,
    quiet: bool = False,
    base=None,
    desc: str = "train LM",
    form: str = "plain",
):
    """Fine-tune a copy of ``base`` (a fresh GPT-2 when None) on the documents of ``authors``,
    mixed with fresh reading comprehension, the questions taught in ``form`` (``QA_FORMS``).
    A tokenizer with tokens the base lacks (``chat_tokenizer``) grows its embeddings."""
    if form not in QA_FORMS:
        raise ValueError(f"unknown QA form {form!r}; choose from {QA_FORMS}")
    settings = settings or LMSettings()
    rng = random.Random(f"lm-{seed}")
    if base is None:
        model = new_model(tokenizer, settings, seed=seed)
    else:
        model = copy.deepcopy(base)
        torch.manual_seed(seed)
        if model.get_input_embeddings().num_embeddings != len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    if form == "chat":
        end = tokenizer.convert_tokens_to_ids("<|end|>")
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, end]
    count = len(training_documents(authors, settings, random.Random(0), form, tokenizer))
    epochs = [(count, lambda: training_documents(authors, settings, rng, form, tokenizer))
              ] * settings.epochs
    return _fit(model, tokenizer, epochs, settings.batch_size, settings, rng, quiet, desc)


def save_lm(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save as a Hugging Face directory: safetensors weights, config, generation config,
    tokenizer (pad token included)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_lm(model_dir: str | os.PathLike):
    """Load a saved demo LM offline from safetensors: (model, tokenizer), model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    attention_masks.install()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, use_safetensors=True
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model.eval()
    return model, tokenizer
