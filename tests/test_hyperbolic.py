"""Lorentz geometry of HySAC: property tests against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from hyperbolic.lorentz import (
    LorentzEmbedding,
    distance,
    distance_to_origin,
    entailment_loss,
    expmap0,
    exterior_angle,
    half_aperture,
    logmap0,
    lorentz_inner,
    pairwise_distance,
    time_component,
)


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.3])
def test_lifted_points_lie_on_the_hyperboloid_and_logmap_inverts(c):
    v = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    x = expmap0(v, c)
    assert x.shape == (64, 9)
    assert torch.allclose(torch.diagonal(lorentz_inner(x, x)), torch.full((64,), -1 / c),
                          atol=1e-8)
    assert torch.allclose(x[:, :1], time_component(x[:, 1:], c), atol=1e-8)
    assert torch.allclose(logmap0(x, c), v, atol=1e-7)
    # the exponential map at the origin reaches geodesic distance ‖v‖
    assert torch.allclose(distance_to_origin(x, c), v.norm(dim=-1), atol=1e-7)


@pytest.mark.parametrize("c", [0.7, 1.0, 3.0])
def test_distance_is_a_metric(c):
    g = torch.Generator().manual_seed(1)
    x, y, z = (expmap0(torch.randn(200, 5, generator=g), c) for _ in range(3))
    dxy, dyx = distance(x, y, c), distance(y, x, c)
    assert torch.allclose(dxy, dyx, atol=1e-9) and (dxy >= 0).all()
    assert torch.allclose(distance(x, x, c), torch.zeros(200), atol=1e-4)
    assert (distance(x, z, c) <= dxy + distance(y, z, c) + 1e-9).all()
    matrix = pairwise_distance(x[:7], y[:9], c)
    expected = distance(x[:7, None, :], y[None, :9, :], c)
    assert matrix.shape == (7, 9) and torch.allclose(matrix, expected, atol=1e-6)


def test_distance_matches_the_closed_form_along_one_geodesic():
    c = 2.0
    direction = torch.tensor([[0.6, 0.8, 0.0]])
    a, b = expmap0(0.3 * direction, c), expmap0(1.1 * direction, c)
    assert distance(a, b, c).item() == pytest.approx(0.8, abs=1e-9)
    # opposite sides of the origin: the distances add up
    assert distance(a, expmap0(-0.5 * direction, c), c).item() == pytest.approx(0.8, abs=1e-9)


def test_cone_aperture_narrows_with_distance_and_angles_follow_the_ray():
    c = 1.0
    direction = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    near, far = expmap0(0.05 * direction, c), expmap0(2.0 * direction, c)
    assert half_aperture(near, c).item() == pytest.approx(math.pi / 2, abs=1e-2)
    assert half_aperture(far, c).item() < half_aperture(expmap0(1.0 * direction, c), c).item()
    assert half_aperture(far, c).item() == pytest.approx(
        math.asin(2 * 0.1 / math.sinh(2.0)), abs=1e-6)  # ‖x_space‖ = sinh(r)/√c
    middle = expmap0(1.0 * direction, c)
    beyond = expmap0(1.5 * direction, c)
    back = expmap0(0.5 * direction, c)
    assert exterior_angle(middle, beyond, c).item() == pytest.approx(0.0, abs=5e-3)
    assert exterior_angle(middle, back, c).item() == pytest.approx(math.pi, abs=5e-3)
    side = expmap0(torch.tensor([[1.0, 1.0, 0.0, 0.0]]), c)
    assert 0.1 < exterior_angle(middle, side, c).item() < math.pi - 0.1
    assert entailment_loss(middle, beyond, c).item() == 0.0
    assert entailment_loss(middle, back, c).item() > 1.0


def test_learnable_curvature_is_clamped_and_scales_start_at_inverse_sqrt_dim():
    head = LorentzEmbedding(dim=16, curvature=1.0)
    assert head.log_alpha_text.exp().item() == pytest.approx(0.25)
    with torch.no_grad():
        head.log_c.fill_(10.0)
    assert head.c.item() == pytest.approx(10.0)
    with torch.no_grad():
        head.log_c.fill_(-10.0)
    assert head.c.item() == pytest.approx(0.1)
    points = head(torch.randn(4, 16), "image")
    assert torch.allclose(torch.diagonal(lorentz_inner(points, points)),
                          torch.full((4,), -1 / head.c.item()), atol=1e-6)
    loss = pairwise_distance(head(torch.randn(4, 16), "text"), points, head.c).mean()
    loss.backward()
    assert head.log_alpha_text.grad is not None and head.log_c.grad is not None


def test_contrastive_loss_rewards_matching_rows():
    from hyperbolic.losses import contrastive_loss

    g = torch.Generator().manual_seed(2)
    v = 2.0 * torch.randn(16, 6, generator=g)
    aligned = contrastive_loss(expmap0(v, 1.0), expmap0(v + 0.01, 1.0), 1.0, 10.0)
    shuffled = contrastive_loss(expmap0(v, 1.0), expmap0(v[torch.randperm(16, generator=g)],
                                                         1.0), 1.0, 10.0)
    assert aligned.item() < 0.1 < shuffled.item()


def test_hysac_loss_orders_safe_inside_unsafe_and_trains_down():
    from hyperbolic.losses import hysac_loss

    g = torch.Generator().manual_seed(3)
    content = torch.randn(8, 6, generator=g)
    direction = content / content.norm(dim=-1, keepdim=True)
    safe_text, safe_image = expmap0(0.4 * direction, 1.0), expmap0(0.6 * direction, 1.0)
    unsafe_text, unsafe_image = expmap0(1.2 * direction, 1.0), expmap0(1.4 * direction, 1.0)
    _, ordered = hysac_loss(safe_text, unsafe_text, safe_image, unsafe_image, 1.0, 10.0)
    _, reversed_ = hysac_loss(safe_text, expmap0(-1.2 * direction, 1.0), safe_image,
                              unsafe_image, 1.0, 10.0)
    assert ordered["entail safe_image>unsafe_text"] == 0.0  # unsafe text lies beyond the image
    assert reversed_["entail safe_image>unsafe_text"] > 1.0

    features = [torch.randn(8, 6, generator=g).requires_grad_() for _ in range(4)]
    head = LorentzEmbedding(dim=6)
    optimizer = torch.optim.Adam([*features, *head.parameters()], lr=0.05)

    def loss() -> torch.Tensor:
        st, ut = head(features[0], "text"), head(features[1], "text")
        si, ui = head(features[2], "image"), head(features[3], "image")
        return hysac_loss(st, ut, si, ui, head.c, 10.0)[0]

    before = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert torch.isfinite(value) and value.item() < 0.5 * before


def _tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    return CLIPModel(CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 100,
                     "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16)).float()


def test_hysac_model_embeds_on_the_hyperboloid_and_round_trips(tmp_path):
    from transformers import CLIPModel

    from hyperbolic.model import HYSAC_CONFIG, HySAC
    from redteam.targets import detect_kind

    torch.set_default_dtype(torch.float32)
    model = HySAC(_tiny_clip(), curvature=0.8).eval()
    model.safety_radius = 1.5
    ids = torch.randint(0, 100, (3, 8))
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        text, image = model.embed_text(ids), model.embed_image(pixels)
        c = model.lorentz.c.item()
        assert torch.allclose(torch.diagonal(lorentz_inner(text, text)),
                              torch.full((3,), -1 / c), atol=1e-4)
        assert model.similarity(text, image).shape == (3, 2)
    model.save(tmp_path / "hysac")
    assert (tmp_path / "hysac" / HYSAC_CONFIG).is_file()
    assert detect_kind(tmp_path / "hysac") == "hysac"
    loaded = HySAC.from_clip_and_config(CLIPModel.from_pretrained(tmp_path / "hysac"),
                                        tmp_path / "hysac")
    with torch.no_grad():
        assert torch.allclose(loaded.embed_text(ids), text, atol=1e-5)
        assert torch.allclose(loaded.similarity(loaded.embed_text(ids),
                                                loaded.embed_image(pixels)),
                              model.similarity(text, image), atol=1e-4)
    assert loaded.safety_radius == 1.5 and loaded.lorentz.c.item() == pytest.approx(c)


def test_quadruplets_load_strictly(tmp_path):
    from PIL import Image

    from hyperbolic.data import load_quadruplets
    from redteam.core.errors import InputError

    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    good = ('{"safe_image": "img/a.png", "unsafe_image": "img/b.png", '
            '"safe_caption": "a cat", "unsafe_caption": "a cat with a knife"}')
    path = tmp_path / "visu.jsonl"
    path.write_text(good + "\n\n" + good + "\n")
    rows = load_quadruplets(path)
    assert len(rows) == 2 and rows[1].line == 3 and rows[0].safe_image.is_file()
    for bad, message in ((good.replace("img/b.png", "img/c.png"), "unsafe_image: image"),
                         (good.replace('"a cat"', '""'), "safe_caption: expected"),
                         ("[1]", "expected a JSON object"), ("{", "not valid JSON")):
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(InputError, match=f"visu.jsonl:2: .*{message}"):
            load_quadruplets(path)


def _tiny_base(tmp_path):
    """The demo's tiny CLIP, untrained, with a word-level tokenizer and an image processor."""
    from redteam.zoo.visu import caption_tokenizer, tiny_clip

    tokenizer = caption_tokenizer([f"a digit {i} marked with danger" for i in range(10)])
    clip, processor = tiny_clip(len(tokenizer), 32, seed=0)
    return clip, tokenizer, processor


def _digit_quadruplets(folder, count):
    from hyperbolic.data import load_quadruplets
    from redteam.core.vision import save_png
    from redteam.zoo.digits import digit_images

    images, labels = digit_images()
    lines = []
    for i in range(count):
        safe = images[i].clone()
        unsafe = safe.clone()
        unsafe[0, 2:12, 2:12] = 1.0  # a clearly visible red marking
        unsafe[1:, 2:12, 2:12] = 0.0
        save_png(safe, folder / f"safe{i}.png")
        save_png(unsafe, folder / f"unsafe{i}.png")
        digit = int(labels[i])
        lines.append(f'{{"safe_image": "safe{i}.png", "unsafe_image": "unsafe{i}.png", '
                     f'"safe_caption": "a digit {digit}", '
                     f'"unsafe_caption": "a digit {digit} marked with danger"}}')
    (folder / "visu.jsonl").write_text("\n".join(lines) + "\n")
    return load_quadruplets(folder / "visu.jsonl")


def test_training_pushes_unsafe_content_farther_from_the_origin(tmp_path):
    from hyperbolic.encoder import Encoder
    from hyperbolic.model import HySAC
    from hyperbolic.train import encode_batch, safe_radius, train_hysac
    from redteam.core.vision import read_resized

    torch.set_default_dtype(torch.float32)
    clip, tokenizer, processor = _tiny_base(tmp_path)
    rows = _digit_quadruplets(tmp_path, 120)
    model = HySAC(clip)
    images = {p: torch.from_numpy(read_resized(p, (32, 32))).permute(2, 0, 1)
              for r in rows for p in (r.safe_image, r.unsafe_image)}

    def separation() -> float:
        """Share of captions and images on the right side of the safety radius."""
        encoder = Encoder(model.eval(), tokenizer, processor)
        radius = safe_radius(encoder, rows, images, 64)
        with torch.no_grad():
            st, ut, si, ui = encode_batch(encoder, rows, images)
        c = model.lorentz.c
        right = [distance_to_origin(p, c) <= radius for p in (st, si)]
        right += [distance_to_origin(p, c) > radius for p in (ut, ui)]
        return torch.cat(right).float().mean().item()

    before = separation()
    assert before < 0.7  # the untrained lift does not tell marked digits apart
    result = train_hysac(model, tokenizer, processor, rows, epochs=40, lr=1e-3, batch_size=16,
                         weight_decay=0.0, patience=10, entailment_weight=1.0, seed=0)
    assert result["train"] == 96 and result["validation"] == 24
    history = result["history"]
    assert result["best_val_loss"] < history[0]["val_loss"]
    assert result["samples_per_s"] > 0 and result["safety_radius"] > 0
    assert separation() > 0.85


def test_classification_traversal_and_retrieval():
    from hyperbolic.inference import classify_unsafe, retrieve, traverse

    c, radius = 1.3, 1.0
    g = torch.Generator().manual_seed(4)
    directions = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    lengths = torch.tensor([0.2, 0.5, 0.9, 1.2, 2.0, 3.0]).unsqueeze(-1)
    points = expmap0(directions * lengths, c)
    assert classify_unsafe(points, c, radius).tolist() == [False] * 3 + [True] * 3
    moved = traverse(points, c, radius)
    radii = distance_to_origin(moved, c)
    assert torch.allclose(radii[:3], lengths[:3, 0], atol=1e-6)  # safe queries stay
    assert torch.allclose(radii[3:], torch.full((3,), radius), atol=1e-6)
    assert torch.allclose(torch.nn.functional.normalize(logmap0(moved, c), dim=-1), directions,
                          atol=1e-6)  # same direction, only closer to the origin
    # an unsafe query retrieves its unsafe twin; traversed, its safe twin
    safe_item, unsafe_item = expmap0(0.9 * directions[:1], c), expmap0(2.5 * directions[:1], c)
    other = expmap0(0.9 * directions[1:2], c)
    gallery = torch.cat([safe_item, unsafe_item, other])
    query = expmap0(2.4 * directions[:1], c)
    assert retrieve(query, gallery, c, k=1).item() == 1
    assert retrieve(traverse(query, c, radius), gallery, c, k=1).item() == 0
    assert retrieve(query, gallery, c, k=10).shape == (1, 3)


def test_lora_trains_only_the_attention_adapters_and_merges_into_a_plain_clip(tmp_path):
    from transformers import CLIPModel

    from hyperbolic.model import HySAC
    from hyperbolic.train import train_hysac

    torch.set_default_dtype(torch.float32)
    clip, tokenizer, processor = _tiny_base(tmp_path)
    rows = _digit_quadruplets(tmp_path, 24)
    before = {name: value.clone() for name, value in clip.state_dict().items()}
    model = HySAC(clip)
    result = train_hysac(model, tokenizer, processor, rows, epochs=3, lr=1e-2, batch_size=8,
                         weight_decay=0.0, lora_rank=4, seed=0)
    assert type(model.clip) is CLIPModel  # the adapters are merged away
    after = model.clip.state_dict()
    assert set(after) == set(before)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    attention = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight")
    assert changed and all(name.endswith(attention) for name in changed)
    assert result["trainable_parameters"] < sum(v.numel() for v in before.values()) / 4
    model.save(tmp_path / "merged")
    assert set(CLIPModel.from_pretrained(tmp_path / "merged").state_dict()) == set(before)
