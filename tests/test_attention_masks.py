"""The broadcast attention masks equal the masks transformers builds with vmap, so installing them
changes no model output."""

import pytest
import torch
from transformers import masking_utils as library

from redteam.core import attention_masks
from redteam.core.attention_masks import broadcast_eager_mask, broadcast_sdpa_mask

BATCH, LENGTH = 4, 9
PADDING = torch.ones(BATCH, LENGTH, dtype=torch.bool)
PADDING[0, :3] = False  # left padding
PADDING[2, -2:] = False  # right padding

MASK_FUNCTIONS = {
    "causal": library.causal_mask_function,
    "sliding window": library.sliding_window_causal_mask_function(3),
    "chunked": library.chunked_causal_mask_function(4, torch.tensor([3, 0, 0, 0])),
}


@pytest.mark.parametrize("padding", [PADDING, None], ids=["padded", "unpadded"])
@pytest.mark.parametrize("name", list(MASK_FUNCTIONS))
def test_the_broadcast_mask_is_the_librarys(name, padding):
    positions = torch.arange(LENGTH)
    expected = library.sdpa_mask(batch_size=BATCH, cache_position=positions, kv_length=LENGTH,
                                 mask_function=MASK_FUNCTIONS[name], attention_mask=padding,
                                 allow_is_causal_skip=False)
    got = broadcast_sdpa_mask(BATCH, positions, LENGTH, 0, MASK_FUNCTIONS[name], padding,
                              allow_is_causal_skip=False)
    assert got.shape == expected.shape and torch.equal(got, expected)


def test_a_decoding_step_and_the_eager_mask_match_too():
    with_new_token = torch.cat([PADDING, torch.ones(BATCH, 1, dtype=torch.bool)], dim=1)
    step = torch.tensor([LENGTH])
    assert torch.equal(
        broadcast_sdpa_mask(BATCH, step, LENGTH + 1, 0, None, with_new_token),
        library.sdpa_mask(batch_size=BATCH, cache_position=step, kv_length=LENGTH + 1,
                          attention_mask=with_new_token))
    positions = torch.arange(LENGTH)
    assert torch.equal(
        broadcast_eager_mask(BATCH, positions, LENGTH, 0, None, PADDING),
        library.eager_mask(batch_size=BATCH, cache_position=positions, kv_length=LENGTH,
                           attention_mask=PADDING))
    assert broadcast_sdpa_mask(BATCH, positions, LENGTH, 0, None, None) is None  # is_causal


def test_a_mask_function_that_does_not_broadcast_falls_back_to_the_library():
    def scalar_only(batch, head, query, key):
        return torch.tensor(bool(key <= query))  # needs one element: fails on a grid

    build = attention_masks._with_fallback(broadcast_sdpa_mask, library.sdpa_mask)
    positions = torch.arange(LENGTH)
    with pytest.raises(RuntimeError):
        broadcast_sdpa_mask(BATCH, positions, LENGTH, 0, scalar_only, PADDING)
    fallback = build(batch_size=BATCH, cache_position=positions, kv_length=LENGTH,
                     mask_function=library.causal_mask_function, attention_mask=PADDING)
    assert torch.equal(fallback, library.sdpa_mask(
        batch_size=BATCH, cache_position=positions, kv_length=LENGTH, attention_mask=PADDING))


def test_a_padded_batch_gives_the_same_logits_and_generation(tiny_lm):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm, local_files_only=True).eval()
    ids = torch.randint(1, 200, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, -3:] = 0
    installed = library.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"]
    try:
        library.AttentionMaskInterface.register("sdpa", library.sdpa_mask)
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).logits
            expected_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=4,
                                             do_sample=False, pad_token_id=0)
        attention_masks._INSTALLED = False
        attention_masks.install()
        assert library.ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is not library.sdpa_mask
        with torch.no_grad():
            got = model(input_ids=ids, attention_mask=mask).logits
            tokens = model.generate(ids, attention_mask=mask, max_new_tokens=4,
                                    do_sample=False, pad_token_id=0)
    finally:
        library.AttentionMaskInterface.register("sdpa", installed)
        attention_masks._INSTALLED = installed is not library.sdpa_mask
    assert torch.equal(got, expected) and torch.equal(tokens, expected_tokens)
