"""Attention masks built by broadcasting instead of ``torch.vmap``: the same booleans, faster.

Since transformers 4.53 every decoder builds its 4-D attention mask by evaluating a *mask
function* ``f(batch, head, q, kv)`` (causal, sliding window, chunked, padding) under four nested
``torch.vmap`` calls. On the CPU that costs about 5 ms per forward pass whenever a batch holds
padding, and the audit's scoring and generation pad every batch: profiled on the demo LM, mask
building was two thirds of the model's forward time in an audit. The mask functions are plain
tensor expressions, so calling one once on broadcast index grids ``[B,1,1,1] x [1,1,1,1] x
[1,1,Q,1] x [1,1,1,K]`` gives the same tensor the vmap builds.

``install()`` registers these builders for the ``sdpa`` and ``eager`` attention implementations
through transformers' public ``AttentionMaskInterface.register``. A mask function that does not
broadcast (or a shape that comes out wrong) falls back to the library's own builder, so the
result is the library's mask either way; ``tests/test_attention_masks.py`` checks they agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_INSTALLED = False


def install() -> None:
    """Register the broadcast builders for ``sdpa`` and ``eager`` (idempotent; a transformers
    without the mask interface keeps its own)."""
    global _INSTALLED
    if _INSTALLED:
        return
    try:
        from transformers import masking_utils
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:
        return
    library_sdpa, library_eager = masking_utils.sdpa_mask, masking_utils.eager_mask
    AttentionMaskInterface.register("sdpa", _with_fallback(broadcast_sdpa_mask, library_sdpa))
    AttentionMaskInterface.register("eager", _with_fallback(broadcast_eager_mask, library_eager))
    _INSTALLED = True


def broadcast_sdpa_mask(batch_size: int, cache_position: torch.Tensor, kv_length: int,
                        kv_offset: int = 0, mask_function: Callable | None = None,
                        attention_mask: torch.Tensor | None = None,
                        local_size: int | None = None, allow_is_causal_skip: bool = True,
                        **_: object) -> torch.Tensor | None:
    """The boolean ``[B, 1, Q, K]`` mask of ``masking_utils.sdpa_mask`` (True: attend), or None
    where SDPA's own ``is_causal`` does the same (no padding, square or single-query)."""
    from transformers.masking_utils import (
        _ignore_causal_mask_sdpa,
        and_masks,
        causal_mask_function,
        padding_mask_function,
        prepare_padding_mask,
    )

    mask_function = mask_function or causal_mask_function
    padding_mask = prepare_padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
    q_length = cache_position.shape[0]
    if allow_is_causal_skip and _ignore_causal_mask_sdpa(padding_mask, q_length, kv_length,
                                                         kv_offset, local_size):
        return None
    if padding_mask is not None:
        mask_function = and_masks(mask_function, padding_mask_function(padding_mask))
    device = cache_position.device
    batch = torch.arange(batch_size, device=device).view(-1, 1, 1, 1)
    head = torch.zeros(1, dtype=torch.long, device=device).view(1, -1, 1, 1)
    query = cache_position.view(1, 1, -1, 1)
    key = (torch.arange(kv_length, device=device) + kv_offset).view(1, 1, 1, -1)
    mask = mask_function(batch, head, query, key)
    shape = (batch_size, 1, q_length, kv_length)
    if mask.dtype != torch.bool or any(a not in (1, b) for a, b in zip(mask.shape, shape)):
        raise _NotBroadcastable
    return mask.expand(shape).contiguous()


def broadcast_eager_mask(batch_size: int, cache_position: torch.Tensor, kv_length: int,
                         kv_offset: int = 0, mask_function: Callable | None = None,
                         attention_mask: torch.Tensor | None = None,
                         dtype: torch.dtype = torch.float32, **kwargs: object) -> torch.Tensor:
    """``masking_utils.eager_mask``: the boolean mask as 0 (attend) and the dtype's minimum."""
    kwargs.pop("allow_is_causal_skip", None)
    mask = broadcast_sdpa_mask(batch_size, cache_position, kv_length, kv_offset, mask_function,
                               attention_mask, allow_is_causal_skip=False, **kwargs)
    zero = torch.tensor(0.0, device=mask.device, dtype=dtype)
    return torch.where(mask, zero, torch.finfo(dtype).min)


class _NotBroadcastable(Exception):
    """A mask function whose result does not have the mask's shape when broadcast."""


def _with_fallback(fast: Callable, library: Callable) -> Callable:
    def build(*args, **kwargs):
        try:
            return fast(*args, **kwargs)
        except (_NotBroadcastable, RuntimeError, TypeError, IndexError):
            return library(*args, **kwargs)

    build.__doc__ = fast.__doc__
    return build
