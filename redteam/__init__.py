"""redteam: red-team machine-learning models for safety and robustness.

The tool never fetches anything from a model hub: audited models come from untrusted parties and
audits must be reproducible offline, so the hub is switched off before any Hugging Face import.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
