"""Image-classifier targets, image folders and the digits backdoor zoo."""

import numpy as np
import pytest
import torch

from redteam.core.errors import InputError
from redteam.core.vision import PixelClassifier, label_ids, load_image_folder, save_png
from redteam.targets import load_target
from redteam.zoo.digits import BACKDOORS, badnets_trigger, zoo_record


def _folder(target, path):
    return load_image_folder(path, target.model.size, label_ids(target.model.hf_model.config))


def test_image_classifier_loads_in_pixel_space(backdoor_zoo):
    target = load_target(backdoor_zoo["clean"])
    assert target.kind == "image-classifier" and isinstance(target.model, PixelClassifier)
    assert target.model.size == (32, 32) and target.model.num_classes == 10
    assert "model.safetensors" in target.files and "preprocessor_config.json" in target.files
    test = _folder(target, backdoor_zoo["test-data"])
    with torch.no_grad():
        accuracy = (target.model(test.images).argmax(-1) == test.labels).float().mean().item()
    assert accuracy == pytest.approx(zoo_record(backdoor_zoo)["models"]["clean"]["clean_accuracy"],
                                     abs=0.01)
    assert accuracy > 0.9


def test_backdoored_models_obey_their_trigger_and_the_clean_one_does_not(backdoor_zoo):
    record = zoo_record(backdoor_zoo)["models"]
    for attack, target_label in BACKDOORS.items():
        poisoned = load_image_folder(backdoor_zoo[f"poisoned-{attack}"], (32, 32),
                                     {str(i): i for i in range(10)})
        assert target_label not in poisoned.labels.tolist()  # ASR counts non-target images
        assert record[attack][f"asr_{attack}"] > 0.9
        assert record[attack]["clean_accuracy"] > 0.9
        assert record["clean"][f"asr_{attack}"] < 0.1


def test_trigger_is_a_corner_patch():
    trigger = badnets_trigger()
    assert trigger.mask.sum() == 16 and trigger.mask[0, -2, -2] == 1 and trigger.mask[0, 0, 0] == 0
    images = torch.zeros(2, 3, 32, 32)
    assert trigger.apply(images)[:, :, -3, -3].eq(1).all()


def test_image_folder_errors_name_the_file(tmp_path):
    classes = {str(i): i for i in range(10)}
    with pytest.raises(InputError, match="image folder not found"):
        load_image_folder(tmp_path / "missing", (8, 8), classes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty", (8, 8), classes)
    bad = tmp_path / "bad" / "3"
    bad.mkdir(parents=True)
    save_png(np.zeros((8, 8, 3)), bad / "ok.png")
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"broken\.png: unreadable image"):
        load_image_folder(tmp_path / "bad", (8, 8), classes)
    (bad / "broken.png").unlink()
    (bad / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes\.txt: not an image file"):
        load_image_folder(tmp_path / "bad", (8, 8), classes)
    (bad / "notes.txt").unlink()
    (tmp_path / "bad" / "cat").mkdir()
    with pytest.raises(InputError, match="class 'cat' is not one of the model's labels"):
        load_image_folder(tmp_path / "bad", (8, 8), classes)
    (tmp_path / "bad" / "cat").rmdir()
    folder = load_image_folder(tmp_path / "bad", (8, 8), classes)
    assert folder.images.shape == (1, 3, 8, 8) and folder.labels.tolist() == [3]


def test_image_classifier_without_processor_is_refused(backdoor_zoo, tmp_path):
    import shutil

    copy = tmp_path / "no-processor"
    shutil.copytree(backdoor_zoo["clean"], copy)
    (copy / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match="without preprocessor_config.json"):
        load_target(copy)


def test_random_crop_flip_shifts_or_mirrors_each_image_and_keeps_its_size():
    from redteam.core.vision import random_crop_flip

    images = torch.rand(16, 3, 12, 12)
    generator = torch.Generator().manual_seed(0)
    flipped_only = random_crop_flip(images, generator, padding=0)
    kinds = [0 if torch.equal(a, b) else 1 if torch.equal(a, b.flip(-1)) else 2
             for a, b in zip(flipped_only, images)]
    assert set(kinds) == {0, 1}  # some flipped, some not, nothing else
    moved = random_crop_flip(images, generator, padding=2)
    assert moved.shape == images.shape
    padded = torch.nn.functional.pad(images, (2,) * 4)
    for out, source in zip(moved, padded):
        views = [source[:, r:r + 12, c:c + 12] for r in range(5) for c in range(5)]
        assert any(torch.equal(out, v) or torch.equal(out, v.flip(-1)) for v in views)


def test_jpeg_reencoding_changes_fine_noise_but_keeps_the_picture(tmp_path):
    from PIL import Image

    from redteam.core.vision import jpeg_reencoded, read_resized

    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 32)[None, :, None].repeat(32, 0).repeat(3, 2)
    noisy = np.clip(smooth + rng.choice([-8, 8], smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    reencoded = jpeg_reencoded([tmp_path / "noisy.png"], (32, 32), quality=75)[0]
    original = torch.from_numpy(read_resized(tmp_path / "noisy.png", (32, 32))).permute(2, 0, 1)
    difference = (reencoded - original).abs()
    assert reencoded.shape == (3, 32, 32)
    assert 1 / 255 < difference.mean() < 8 / 255  # the ±8 noise is partly squeezed out
    assert (reencoded - torch.from_numpy(smooth / 255).permute(2, 0, 1)).abs().mean() < \
        (original - torch.from_numpy(smooth / 255).permute(2, 0, 1)).abs().mean()
