"""Weight files of untrusted models: safetensors by default, pickle only weights-only, and the
checks that refuse a model which is not what it claims (docs/threat-model.md, "Safety rules
for untrusted models").

A truncated download, a shard the index names but the folder lacks, or a weights file that
misses tensors of its architecture would otherwise load "successfully" with random weights in
their place (Transformers only warns), and the audit would give a verdict on a model nobody
trained. Every check here names the file and the first problem.
"""

from __future__ import annotations

from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.untrusted import parse_json, read_json_object

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


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
# Tensors in one file: the largest real checkpoints hold a few thousand a shard; loading time
# grows quadratically with the count (200,000 empty tensors: minutes), so a header listing more
# is refused before any loader reads it.
MAX_SAFETENSORS_TENSORS = 50_000


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
    if len(header) > MAX_SAFETENSORS_TENSORS:
        raise InputError(f"{file}: safetensors header lists {len(header):,} tensors, more than "
                         f"the {MAX_SAFETENSORS_TENSORS:,} accepted in one file")
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


def first_non_finite(module) -> str | None:
    """The name of ``module``'s first floating parameter holding NaN or inf, or of its first
    floating buffer holding NaN (some architectures keep -inf masks as buffers); None when all
    are finite. Tensors not materialised (on the meta device) are skipped."""
    import torch

    def broken(tensor, allowed_inf: bool) -> bool:
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            return False
        return bool(torch.isnan(tensor).any()) if allowed_inf \
            else not bool(torch.isfinite(tensor).all())

    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if broken(tensor, allowed_inf=False):
                return name
        for name, tensor in module.named_buffers():
            if broken(tensor, allowed_inf=True):
                return name
    return None


def check_finite(path: Path, module) -> None:
    """Refuse a model with a NaN or infinite weight: every output it gives is NaN, and a verdict
    on NaN (a pass, a "critical" anomaly) would be a verdict on a broken file."""
    name = first_non_finite(module)
    if name is not None:
        raise InputError(f"{path}: weights are not finite: {name} holds NaN or inf (a broken "
                         f"model gets no verdict)")


def check_label_map(path: Path, config) -> None:
    """A classifier's labels as ``config.json`` declares them: ids 0..n-1, names unique, and
    ``label2id`` the inverse of ``id2label``. A shifted or duplicated map makes every per-label
    verdict (a backdoor's target label, a flip to it) name the wrong label or none."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    count = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    where = path / "config.json"
    if sorted(id2label) != list(range(count)):
        raise InputError(f"{where}: id2label: expected the ids 0..{count - 1}, got "
                         f"{sorted(id2label)[:8]}")
    names = list(id2label.values())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{where}: id2label: the label name {repeated[0]!r} is given to "
                         f"several ids")
    label2id = getattr(config, "label2id", None) or {}
    for name, index in label2id.items():
        if id2label.get(_as_int(index)) != str(name):
            raise InputError(f"{where}: label2id: {name!r} -> {index!r}, but id2label gives "
                             f"that id {id2label.get(_as_int(index))!r} (the two maps must "
                             f"agree)")


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _unpickler_refusal(exc: BaseException) -> str:
    """What the weights-only unpickler refused, without torch's advice to retry unsafely."""
    text, marker = str(exc), "WeightsUnpickler error:"
    if marker in text:
        after = text.split(marker, 1)[1]
        reason = next((line.strip() for line in after.splitlines() if line.strip()), "")
        if reason:
            return reason.split(" was not an allowed global")[0][:300]
    return f"{type(exc).__name__}: not a file of plain tensors"


def load_pickle_state_dict(path: Path) -> dict:
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
