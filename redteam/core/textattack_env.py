"""Import TextAttack offline, with its caches in a folder the project manages.

TextAttack (Morris et al. 2020, arXiv:2005.05909) does three things at import that this tool must
not let happen: it calls ``nltk.download`` for six corpora unless a marker file
(``post_install_check_3``) exists in its cache folder, it creates that cache folder in the user's
home (``~/.cache/textattack``), and when ``TA_CACHE_DIR`` is set it points ``HF_HOME``,
``XDG_CACHE_HOME`` and other cache variables of the whole process at it. The tool never opens a
network connection and never writes into the user's home, so ``import_textattack`` prepares a
private folder under the system's temporary directory first (the marker, and the one NLTK corpus
the character-level recipes need: English stopwords, written from scikit-learn's list), imports
TextAttack with its cache and NLTK's data path pointed there, and then puts every environment
variable back as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from types import ModuleType

MARKER = "post_install_check_3"  # textattack/shared/utils/install.py: skip the NLTK downloads
STOPWORDS = Path("corpora") / "stopwords" / "english"

_imported: ModuleType | None = None


def _private_dir(path: Path) -> bool:
    """True when ``path`` is a folder of ours that nobody else can write to."""
    info = path.lstat()
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def cache_dir() -> Path:
    """The folder TextAttack and NLTK read from: ``<tmp>/redteam-textattack-<uid>``.

    The temporary directory is shared between users, so a folder someone else made (or made
    writable to others) is not trusted: a fresh private one is made instead.
    """
    path = Path(tempfile.gettempdir()) / f"redteam-textattack-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not _private_dir(path):
            return Path(tempfile.mkdtemp(prefix="redteam-textattack-"))
    return path


def prepare(root: Path) -> None:
    """Write the post-install marker and NLTK's English stopwords under ``root``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    (root / MARKER).touch()
    stopwords = root / STOPWORDS
    if not stopwords.is_file():
        stopwords.parent.mkdir(parents=True, exist_ok=True)
        partial = stopwords.with_name(f".english.{os.getpid()}")
        partial.write_text("\n".join(sorted(ENGLISH_STOP_WORDS)) + "\n", encoding="utf-8")
        partial.replace(stopwords)  # atomic: a concurrent run never reads half a list


def _refuse_download(*args, **kwargs) -> bool:
    """Stands in for ``nltk.download`` during the import: report failure, fetch nothing."""
    return False


def import_textattack() -> ModuleType:
    """Import ``textattack`` offline (see the module docstring) and return it.

    Hugging Face libraries are imported first, so that their cache locations are fixed from the
    user's environment before TextAttack rewrites ``HF_HOME``; matplotlib (imported by flair)
    keeps its font cache in the same private folder.
    """
    global _imported
    if _imported is not None:
        return _imported
    import huggingface_hub  # noqa: F401  (reads HF_HOME now, before TextAttack changes it)
    import nltk
    import transformers  # noqa: F401

    root = cache_dir()
    prepare(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    saved = dict(os.environ)
    os.environ.update({"TA_CACHE_DIR": str(root), "NLTK_DATA": str(root)})
    os.environ.setdefault("MPLCONFIGDIR", str(root / "matplotlib"))
    download, nltk.download = nltk.download, _refuse_download  # in case the marker ever changes
    try:
        import textattack
    finally:
        nltk.download = download
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
    import logging

    logging.getLogger("textattack.shared.utils.install").setLevel(logging.WARNING)
    _imported = textattack
    return textattack
