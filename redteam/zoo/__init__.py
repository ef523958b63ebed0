"""Builders of the embedded demo targets, trained locally (nothing is downloaded).

The unlearning zoo: a tiny GPT-2 that memorised facts about fictitious authors (``original``),
one retrained without the forget authors (``retrain``, the gold standard), variants unlearned
from the original (``ga``, ``graddiff``, ``npo``, ``simnpo``, ``salun-npo``) and the audit JSONL.
The digits zoo (``redteam.zoo.digits``): clean, BadNets and Blend image classifiers with the
defender's clean images, test images and triggered test images. ``build_format_zoo`` adds an
original/retrain pair that learnt its questions only through a chat template (or only
zero-shot), to audit with each prompt format. The concept zoo (``redteam.zoo.diffusion``): a
text-to-image pipeline of the Stable Diffusion layout trained on coloured digits, its ESD
erasure of the digit three, and a digits classifier as the judge.
"""

from redteam.zoo.authors import audit_items, make_world, write_audit_jsonl
from redteam.zoo.build import build_format_zoo, build_unlearning_zoo, builder_version, zoo_home

__all__ = [
    "audit_items",
    "build_format_zoo",
    "build_unlearning_zoo",
    "builder_version",
    "make_world",
    "write_audit_jsonl",
    "zoo_home",
]
