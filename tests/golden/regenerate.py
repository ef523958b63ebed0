"""Regenerate the golden values of tests/test_conformance.py by running the benchmark authors' own
metric code on a small fixed input set. Run by hand, never by CI:

    python tests/golden/regenerate.py --inputs \
        --checkout open-unlearning=DIR --checkout tofu=DIR --checkout muse=DIR \
        --checkout rwku=DIR --checkout mink-plus-plus=DIR [--commit NAME=SHA ...] \
        [--path EXTRA_SITE_DIR]

Each DIR is a checkout of the reference repository (locuslab/open-unlearning, locuslab/tofu,
swj0419/muse_bench, jinzhuoran/RWKU, zjysteven/mink-plus-plus); its commit is read with
``git rev-parse`` unless ``--commit`` gives it. The references need torch, numpy, scipy,
scikit-learn, rouge_score, and for RWKU the ``rouge`` package (pltrdy) and for open-unlearning
``omegaconf``: ``--path`` adds a folder where those were installed (``pip install --target``).
``--inputs`` rewrites inputs.json from its seed first (otherwise the committed one is used).

The model is a fixed "bigram" table: the logits at a position are the row of ``W`` for the token
there, so every reference and this project see the same logits for the same tokens. Only the
harness (that model, a character tokenizer, data loaders, stubs for imports that load models or
datasets) is written here; every golden value is what the reference's function returned. Each
reference runs in its own process, so their modules (``utils``, ``data``) do not collide.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "inputs.json"
SEED = 20240635
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,?"
BOS, EOS = 0, 1
REPOSITORIES = {
    "open-unlearning": "locuslab/open-unlearning",
    "tofu": "locuslab/tofu",
    "muse": "swj0419/muse_bench",
    "rwku": "jinzhuoran/RWKU",
    "mink-plus-plus": "zjysteven/mink-plus-plus",
}


# ------------------------------------------------------------------ the fixed input set
def _sample(rng, table, length: int, temperature: float, first: int = BOS) -> list[int]:
    import numpy as np

    ids, prev = [], first
    for _ in range(length):
        logits = table[prev][2:] / temperature  # characters only: never BOS or EOS
        p = np.exp(logits - logits.max())
        prev = int(rng.choice(len(p), p=p / p.sum())) + 2
        ids.append(prev)
    return ids


def _text(ids: list[int]) -> str:
    return "".join(ALPHABET[i - 2] for i in ids)


def build_inputs() -> dict:
    """The input set: two bigram tables (target, retrain), MIA texts, TOFU-style QA items,
    memorization sequences and string pairs. Deterministic under SEED."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    vocab = 2 + len(ALPHABET)
    tables = {name: np.round(rng.normal(0.0, 2.0, (vocab, vocab)), 4)
              for name in ("target", "retrain")}
    target = tables["target"]
    forget = [_text(_sample(rng, target, int(rng.integers(15, 60)), 1.0)) for _ in range(8)]
    holdout = [_text(_sample(rng, target, int(rng.integers(15, 60)), 2.5)) for _ in range(8)]

    def qa(count: int) -> list[dict]:
        items = []
        for _ in range(count):
            items.append({
                "question": _text(_sample(rng, target, int(rng.integers(8, 16)), 2.0)),
                "answer": _text(_sample(rng, target, int(rng.integers(5, 14)), 1.0)),
                "paraphrased_answer": _text(_sample(rng, target, int(rng.integers(5, 14)),
                                                    float(rng.choice([0.7, 1.0, 2.0])))),
                "perturbed_answers": [_text(_sample(rng, target, int(rng.integers(4, 15)),
                                                    float(rng.choice([1.0, 2.0, 4.0]))))
                                      for _ in range(5)],
            })
        return items

    memorization = []
    # which answer positions break the argmax chain: none, the first, a middle one, the last,
    # several, all
    for corrupt in ([], [0], [4], ["last"], [1, 6], [2, "last"], ["all"], [0, 3, 5], [7], []):
        prompt = _sample(rng, target, 5, 1.0)
        length = int(rng.integers(8, 13))
        answer, prev = [], prompt[-1]
        for j in range(length):
            best = int(np.argmax(target[prev][2:])) + 2
            broken = ("all" in corrupt or j in corrupt
                      or ("last" in corrupt and j == length - 1))
            token = best
            while broken and token == best:
                token = int(rng.integers(2, vocab))
            answer.append(token)
            prev = token
        memorization.append({"prompt_ids": [BOS, *prompt], "answer_ids": answer})
    pairs = [
        ("the author was born in lisbon", "lisbon"),
        ("She was running late", "she runs late"),
        ("He writes novels about dragons.", "He wrote novels about dragons"),
        ("", "Basil Mahfouz Al-Kuwaiti"),
        ("   ", "a quiet town"),
        ("Paris", "Lisbon"),
        ("The answer is 1984, published in London.", "1984"),
        ("Zoë Müller won the prize in 2019", "Zoe Muller won the 2019 prize"),
        ("cats and dogs, dogs and cats", "dogs and cats"),
        ("I don't know.", "Jaime Vasquez"),
        ("studies studied studying", "study"),
        ("Chemistry; physics & biology!", "chemistry physics biology"),
    ]
    return {
        "seed": SEED, "alphabet": ALPHABET, "bos": BOS, "eos": EOS,
        "note": "token ids: 0 BOS, 1 EOS, 2 + position in alphabet; logits at a position are "
                "the row of the table for the token there (float32)",
        "tables": {name: t.tolist() for name, t in tables.items()},
        "mia": {"forget": forget, "holdout": holdout},
        "qa": {"forget": qa(12), "retain": qa(12), "real_authors": qa(6),
               "world_facts": qa(6)},
        "memorization": memorization,
        "rouge_pairs": [{"prediction": p, "reference": r} for p, r in pairs],
    }


# ------------------------------------------------------------------ the harness
def encode(text: str) -> list[int]:
    return [BOS] + [ALPHABET.index(c) + 2 for c in text.lower()]


class Tokenizer:
    """A character tokenizer with the methods the references call."""

    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, EOS
    padding_side = "right"

    def encode(self, text: str, **_) -> list[int]:
        return encode(text)

    def decode(self, ids, skip_special_tokens: bool = True, **_) -> str:
        ids = [int(i) for i in ids]
        return "".join(ALPHABET[i - 2] for i in ids if i >= 2 or not skip_special_tokens)

    def batch_decode(self, rows, **kw) -> list[str]:
        return [self.decode(r, **kw) for r in rows]

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def convert_tokens_to_ids(self, token: str) -> int:
        return EOS


class Output(tuple):
    """(loss, logits) that also answers ``.loss`` and ``.logits``, like transformers' output."""

    @property
    def loss(self):
        return self[0]

    @property
    def logits(self):
        return self[1]


class BigramLM:
    """Logits at each position = the table's row for the token there; a loss as transformers
    computes it (mean over the shifted labels, -100 ignored)."""

    def __init__(self, table) -> None:
        import torch

        self.table = torch.tensor(table, dtype=torch.float32)
        self.device = torch.device("cpu")

    def eval(self):
        return self

    def __call__(self, input_ids=None, attention_mask=None, labels=None, **_):
        import torch

        logits = self.table[input_ids]
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[..., :-1, :].reshape(-1, logits.shape[-1]),
                labels[..., 1:].reshape(-1), ignore_index=-100)
        return Output((loss, logits))


def qa_example(question: str, answer: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of BOS + question + answer, the answer labelled."""
    q, a = encode(question), encode(answer)[1:]
    return q + a, [-100] * len(q) + a


def padded(rows: list[tuple[list[int], list[int]]]):
    """input_ids, labels, attention_mask tensors of rows padded on the right with EOS."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [EOS] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    return ids, labels, mask


def stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def package(name: str, path: Path) -> None:
    """Make ``name`` a package at ``path`` without running its ``__init__`` (which imports
    model loaders and data sets the metric functions do not need)."""
    stub(name, __path__=[str(path)])


# ------------------------------------------------------------------ the references
def run_open_unlearning(root: Path, inputs: dict) -> list[dict]:
    import torch

    sys.path.insert(0, str(root / "src"))
    package("data", root / "src" / "data")
    sys.modules["data"].get_datasets = sys.modules["data"].get_collators = None
    package("evals", root / "src" / "evals")
    package("evals.metrics", root / "src" / "evals" / "metrics")
    from evals.metrics.memorization import exact_memorization, extraction_strength, truth_ratio
    from evals.metrics.mia.loss import LOSSAttack
    from evals.metrics.mia.min_k import MinKProbAttack
    from evals.metrics.mia.min_k_plus_plus import MinKPlusPlusAttack
    from evals.metrics.mia.utils import mia_auc
    from evals.metrics.mia.zlib import ZLIBAttack
    from evals.metrics.privacy import ks_test, privleak
    from evals.metrics.utils import evaluate_probability, run_batchwise_evals

    def collate(rows):
        ids, labels, mask = padded([(r["ids"], r["labels"]) for r in rows])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                "index": torch.tensor([r["index"] for r in rows])}

    target = BigramLM(inputs["tables"]["target"])
    out = []
    texts = inputs["mia"]
    data = {split: [{"ids": encode(t), "labels": [-100] + encode(t)[1:], "index": i}
                    for i, t in enumerate(texts[split])] for split in ("forget", "holdout")}
    attacks = {"loss": (LOSSAttack, {}), "zlib": (ZLIBAttack, {"tokenizer": Tokenizer()}),
               "min_k": (MinKProbAttack, {"k": 0.4}),
               "min_k_plus_plus": (MinKPlusPlusAttack, {"k": 0.4})}
    for attack, (cls, kw) in attacks.items():
        result = mia_auc(cls, target, data, collate, 1, **kw)
        # tokenwise_logprobs drops the last labelled token (their EOS): Min-K% sees one fewer
        dropped = attack in ("min_k", "min_k_plus_plus")
        out.append({
            "function": f"src/evals/metrics/mia/utils.py mia_auc({cls.__name__}"
                        + "".join(f", {k}={v}" for k, v in kw.items() if k == "k") + ")",
            "attack": attack, "k": kw.get("k"),
            "token_span": "text tokens after BOS" + (", without the last" if dropped else ""),
            "orientation": "score higher = non-member (a loss); AUC with holdout as label 1, "
                           "i.e. 1 when forget texts are far likelier",
            "scores": {split: [result[split]["value_by_index"][str(i)]["score"]
                               for i in range(len(texts[split]))]
                       for split in ("forget", "holdout")},
            "auc": float(result["auc"]),
        })

    def qa_losses(model, items, field):
        """avg_loss per item (answers under ``field``), through their run_batchwise_evals."""
        if field == "perturbed_answers":
            count = len(items[0][field])
            batches = [{str(j): collate([{**dict(zip(("ids", "labels"),
                                                      qa_example(it["question"], it[field][j]))),
                                          "index": i}])
                        for j in range(count)} for i, it in enumerate(items)]
        else:
            batches = [collate([{**dict(zip(("ids", "labels"),
                                            qa_example(it["question"], it[field]))),
                                 "index": i}]) for i, it in enumerate(items)]
        return run_batchwise_evals(model, batches, evaluate_probability, {}, field)

    ratios = {}
    for label in ("target", "retrain"):
        model = BigramLM(inputs["tables"][label])
        items = inputs["qa"]["forget"]
        pre = {"correct": {"value_by_index": qa_losses(model, items, "paraphrased_answer")},
               "wrong": {"value_by_index": qa_losses(model, items, "perturbed_answers")}}
        for aggregator in ("closer_to_1_better", "true_better"):
            result = truth_ratio._metric_fn(model, pre_compute=pre, aggregator=aggregator)
            ratios[label] = result["value_by_index"]
            out.append({
                "function": f"src/evals/metrics/memorization.py truth_ratio(aggregator="
                            f"{aggregator})",
                "model": label, "items": "qa.forget: paraphrased_answer vs perturbed_answers",
                "ratios": [float(result["value_by_index"][i]["score"])
                           for i in range(len(items))],
                "agg_value": float(result["agg_value"]),
            })
    quality = ks_test._metric_fn(
        None, pre_compute={"forget": {"value_by_index": ratios["target"]}},
        reference_logs={"retain_model_logs": {"retain": {"value_by_index": ratios["retrain"]}}})
    out.append({"function": "src/evals/metrics/privacy.py ks_test",
                "models": "target vs retrain truth ratios on qa.forget",
                "agg_value": float(quality["agg_value"])})

    data = [{"ids": m["prompt_ids"] + m["answer_ids"] + [EOS],
             "labels": [-100] * len(m["prompt_ids"]) + m["answer_ids"] + [EOS], "index": i}
            for i, m in enumerate(inputs["memorization"])]
    for name, metric in (("exact_memorization", exact_memorization),
                         ("extraction_strength", extraction_strength)):
        result = metric._metric_fn(target, data=data, collators=collate, batch_size=1)
        out.append({
            "function": f"src/evals/metrics/memorization.py {name}",
            "token_span": "answer_ids (their EOS, appended as the last label, is dropped)",
            "scores": [float(result["value_by_index"][i]["score"]) for i in range(len(data))],
        })
    for forget_auc, retain_auc in ((0.9, 0.5), (0.5, 0.5), (0.3, 0.55), (0.97, 0.62),
                                   (0.999, 0.9995), (0.8, 1.0)):
        result = privleak._metric_fn(
            None, pre_compute={"forget": {"agg_value": forget_auc}},
            reference_logs={"retain_model_logs": {"retain": {"agg_value": retain_auc}}})
        out.append({"function": "src/evals/metrics/privacy.py privleak",
                    "auc_forget": forget_auc, "auc_retrain": retain_auc,
                    "orientation": "AUCs as mia_auc gives them (1 = forget far likelier)",
                    "agg_value": float(result["agg_value"])})
    return out


def tofu_eval_logs(evaluate_util, data_module, model, items: list[dict],
                   rouge: dict) -> dict:
    """One TOFU eval_log file's statistics, computed by TOFU's own eval_perturbation_ratio,
    get_batch_loss and eval_rouge_recall."""
    import torch

    def rows(field):
        return [qa_example(it["question"], it[field]) for it in items]

    def loader(field):
        for i, row in enumerate(rows(field)):
            ids, labels, mask = padded([row])
            yield ids, labels, mask, torch.tensor([i])

    def perturbed_loader():
        for i, it in enumerate(items):
            ids, labels, mask = padded([qa_example(it["question"], a)
                                        for a in it["perturbed_answers"]])
            yield ids[None], labels[None], mask[None], torch.tensor([i])

    logs = evaluate_util.eval_perturbation_ratio(loader("paraphrased_answer"),
                                                 perturbed_loader(), model)
    gt = {}
    for i, row in enumerate(rows("answer")):
        ids, labels, _ = padded([row])
        loss = data_module.get_batch_loss(model(input_ids=ids).logits, labels)
        gt[i] = float(loss[0] / (labels != -100).sum())
    logs["avg_gt_loss"] = gt
    logs.update(rouge)
    return logs


def run_tofu(root: Path, inputs: dict) -> list[dict]:
    sys.path.insert(0, str(root))
    stub("hydra", main=lambda **_: (lambda f: f))
    stub("natsort", natsorted=sorted)
    stub("evaluate", load=None)
    import aggregate_eval_stat
    import data_module
    import evaluate_util

    pairs = inputs["rouge_pairs"]
    rouge = evaluate_util.eval_rouge_recall([p["prediction"] for p in pairs],
                                            [p["reference"] for p in pairs], range(len(pairs)))
    out = [{"function": "evaluate_util.py eval_rouge_recall",
            "pairs": "rouge_pairs (prediction as the generation, reference as the ground "
                     "truth)",
            "rougeL_recall": [rouge["rougeL_recall"][i] for i in range(len(pairs))],
            "rouge1_recall": [rouge["rouge1_recall"][i] for i in range(len(pairs))]}]
    files = {"eval_log_forget.json": "forget", "eval_log.json": "retain",
             "eval_real_author_wo_options.json": "real_authors",
             "eval_real_world_wo_options.json": "world_facts"}
    results = {}
    for label in ("target", "retrain"):
        model = BigramLM(inputs["tables"][label])
        results[label] = {}
        for name, split in files.items():
            items = inputs["qa"][split]
            scored = evaluate_util.eval_rouge_recall([it["answer"][:len(it["answer"]) * 3 // 5]
                                                      for it in items],
                                                     [it["answer"] for it in items],
                                                     range(len(items)))
            results[label][name] = tofu_eval_logs(evaluate_util, data_module, model, items,
                                                  {"rougeL_recall": scored["rougeL_recall"]})
        utility = aggregate_eval_stat.get_model_utility(results[label])
        out.append({"function": "aggregate_eval_stat.py get_model_utility", "model": label,
                    "generations": "each item's answer cut to its first 3/5 (characters) "
                                   "stands in for the generation scored against it",
                    "splits": files,
                    **{key: float(value) for key, value in utility.items()}})
    quality = aggregate_eval_stat.get_forget_quality(results["target"], results["retrain"])
    out.append({"function": "aggregate_eval_stat.py get_forget_quality",
                "models": "target vs retrain on qa.forget",
                **{key: float(value) for key, value in quality.items()}})
    return out


def run_muse(root: Path, inputs: dict) -> list[dict]:
    package("muse", root)
    package("muse.metrics", root / "metrics")
    import numpy as np
    from muse.metrics import privleak
    from muse.metrics.logger import RougeEvalLogger

    texts = inputs["mia"]
    model = BigramLM(inputs["tables"]["target"])
    # privleak.eval stops at ``log['forget'].keys()`` (a list) at this commit, so its two steps
    # run here as it means them: eval_data per split, then sweep with split0 = forget as label 0
    # and split1 = holdout as label 1 ("forget_holdout_<score>")
    log = {split: privleak.eval_data(texts[split], model, Tokenizer())
           for split in ("forget", "holdout")}
    auc = {}
    for key in ("PPL", "PPL/zlib", "Min-40%"):
        ppl = np.array([d[key] for d in log["forget"]] + [d[key] for d in log["holdout"]])
        y = np.array([0] * len(log["forget"]) + [1] * len(log["holdout"]))
        auc[f"forget_holdout_{key}"] = privleak.sweep(ppl, y)[2]
    logger = RougeEvalLogger()
    for pair in inputs["rouge_pairs"]:
        logger.log("", pair["reference"], pair["prediction"])
    keys = ("PPL", "PPL/zlib", "Min-40%")
    return [
        {"function": "metrics/privleak.py eval_data and sweep (as eval calls them)",
         "token_span": "text tokens after BOS",
         "orientation": "each score is a loss (higher = non-member); forget_holdout AUCs put "
                        "holdout as label 1 and score -loss: 1 - the AUC of forget as members",
         "scores": {split: [{key: row[key] for key in keys} for row in log[split]]
                    for split in ("forget", "holdout")},
         "auc": {key: float(auc[f"forget_holdout_{key}"]) for key in keys}},
        {"function": "metrics/logger.py RougeEvalLogger.log (use_stemmer=False)",
         "pairs": "rouge_pairs (prediction as the output, reference as gt)",
         "rougeL": [row["rougeL"] for row in logger.history],
         "rougeL_recall": [row["rougeL_recall"] for row in logger.history]},
    ]


def run_rwku(root: Path, inputs: dict) -> list[dict]:
    package("rwku_eval", root / "LLaMA-Factory" / "src" / "llmtuner" / "eval")
    generations: list[str] = []
    stub("rwku_eval.inference",
         generate_completions=lambda **kw: list(generations[:len(kw["prompts"])]))
    import importlib

    eval_forget = importlib.import_module("rwku_eval.eval_forget")
    recall = []
    for pair in inputs["rouge_pairs"]:
        generations[:] = [pair["prediction"]] * 3
        item = {"query": "q ___", "answer": pair["reference"], "subject": "s", "type": "x"}
        scores = eval_forget.eval_forget(None, Tokenizer(), [{**item, "level": "1"}],
                                         [{**item, "level": "2"}], [{**item, "level": "3"}])
        recall.append(float(scores[0]))
    generations[:] = [p["prediction"] for p in inputs["rouge_pairs"]] * 2  # levels 2, 3 too
    items = [{"query": "q", "answer": p["reference"], "subject": "s", "type": "x",
              "level": "1"} for p in inputs["rouge_pairs"]]
    mean = eval_forget.eval_forget(None, Tokenizer(), items, [{**items[0], "level": "2"}],
                                   [{**items[0], "level": "3"}])[0]
    return [{"function": "LLaMA-Factory/src/llmtuner/eval/eval_forget.py eval_forget "
                         "(generations given; an empty one becomes NOANSWER)",
             "pairs": "rouge_pairs (prediction as the generation, reference as the answer)",
             "rouge_l_recall": recall, "level_1_mean_over_all_pairs": float(mean)}]


def run_mink(root: Path, inputs: dict) -> list[dict]:
    import sklearn.metrics
    import transformers

    texts = inputs["mia"]
    rows = ([{"input": t, "label": 1} for t in texts["forget"]]
            + [{"input": t, "label": 0} for t in texts["holdout"]])
    transformers.AutoModelForCausalLM.from_pretrained = staticmethod(
        lambda *a, **k: BigramLM(inputs["tables"]["target"]))
    transformers.AutoTokenizer.from_pretrained = staticmethod(lambda *a, **k: Tokenizer())
    stub("datasets", load_dataset=lambda *a, **k: rows)
    # run.py rebinds ``scores`` in its last loop, so each method's scores and AUROC are read
    # as they pass through sklearn (recorded, returned unchanged)
    seen: list[list] = []
    roc_curve, area = sklearn.metrics.roc_curve, sklearn.metrics.auc

    def recording_roc_curve(labels, scores, *a, **k):
        seen.append([list(scores)])
        return roc_curve(labels, scores, *a, **k)

    def recording_auc(x, y):
        seen[-1].append(float(area(x, y)))
        return seen[-1][-1]

    sklearn.metrics.roc_curve, sklearn.metrics.auc = recording_roc_curve, recording_auc
    sys.argv = ["run.py"]
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        ran = runpy.run_path(str(root / "run.py"), run_name="__main__")
    by_method = dict(zip(ran["results"]["method"], seen))
    keys = ("loss", "zlib", "mink_0.4", "mink++_0.4")
    return [{"function": "run.py (its scoring loop, then get_metrics per method)",
             "token_span": "text tokens after BOS",
             "orientation": "scores higher = member (log-likelihoods); label 1 = forget",
             "scores": {key: [float(v) for v in by_method[key][0]] for key in keys},
             "auroc": {key: by_method[key][1] for key in keys}}]


RUNNERS = {"open-unlearning": run_open_unlearning, "tofu": run_tofu, "muse": run_muse,
           "rwku": run_rwku, "mink-plus-plus": run_mink}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", action="store_true", help="rewrite inputs.json first")
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--commit", action="append", default=[], metavar="NAME=SHA")
    parser.add_argument("--path", action="append", default=[], help="extra import folder")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one reference, in a child process
    args = parser.parse_args()
    for extra in args.path:
        sys.path.insert(0, extra)
    if args.run:
        name, root = args.run.split("=", 1)
        values = RUNNERS[name](Path(root).resolve(), json.loads(INPUTS.read_text()))
        sys.stdout.write("\nGOLDEN " + json.dumps(values) + "\n")
        return
    if args.inputs:
        INPUTS.write_text(json.dumps(build_inputs(), indent=1) + "\n")
    commits = dict(c.split("=", 1) for c in args.commit)
    for checkout in args.checkout:
        name, root = checkout.split("=", 1)
        commit = commits.get(name) or subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True).stdout.strip()
        child = subprocess.run(
            [sys.executable, __file__, "--run", f"{name}={root}",
             *[f"--path={p}" for p in args.path]], capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{name}: the reference failed\n{child.stderr[-4000:]}")
        values = json.loads(child.stdout.rsplit("\nGOLDEN ", 1)[1])
        record = {"repository": f"https://github.com/{REPOSITORIES[name]}", "commit": commit,
                  "generated_by": "tests/golden/regenerate.py", "inputs": "inputs.json",
                  "values": values}
        (HERE / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name} @ {commit[:12]}: {len(values)} records")


if __name__ == "__main__":
    main()
