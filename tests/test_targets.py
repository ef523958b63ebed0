import json
import pickle

import pytest
import torch

from redteam.core.errors import InputError
from redteam.targets import detect_kind, load_target
from tests.conftest import make_tiny_lm


def _config_dir(tmp_path, name, architectures, extra_files=()):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": architectures}))
    for extra in extra_files:
        (path / extra).write_text("{}")
    return path


@pytest.mark.parametrize("architectures, extra, kind", [
    (["GPT2LMHeadModel"], (), "causal-lm"),
    (["LlamaForCausalLM"], (), "causal-lm"),
    (["ResNetForImageClassification"], ("preprocessor_config.json",), "image-classifier"),
    (["BertForSequenceClassification"], (), "text-classifier"),
    (["CLIPModel"], (), "clip"),
    (["CLIPModel"], ("hysac_config.json",), "hysac"),
])
def test_detect_kind(tmp_path, architectures, extra, kind):
    assert detect_kind(_config_dir(tmp_path, "m", architectures, extra)) == kind


def test_detect_diffusion_and_bad_dirs(tmp_path):
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text("{}")
    assert detect_kind(pipe) == "diffusion"
    with pytest.raises(InputError, match="does not exist"):
        detect_kind(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a model directory"):
        detect_kind(tmp_path / "plain")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: not valid JSON"):
        detect_kind(broken)


def test_pipeline_without_components_is_refused_clearly(tmp_path):
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text("{}")
    with pytest.raises(InputError, match="pipeline without a UNet"):
        load_target(pipe)


def test_safetensors_model_loads_and_is_hashed(tiny_lm):
    target = load_target(tiny_lm)
    assert target.kind == "causal-lm"
    assert "model.safetensors" in target.files and len(target.files["model.safetensors"]) == 64
    assert not target.model.training


class Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_only_directory_is_refused_and_payload_never_runs(tmp_path):
    path = make_tiny_lm(tmp_path / "evil")
    (path / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    with open(path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weight": Payload(marker)}, handle)
    with pytest.raises(InputError, match="only pickle weights.*--allow-pickle"):
        load_target(path)
    with pytest.raises(InputError, match="refused by the weights-only unpickler"):
        load_target(path, allow_pickle=True)
    assert not marker.exists()


def test_allow_pickle_loads_plain_state_dict(tmp_path):
    path = make_tiny_lm(tmp_path / "bin", safetensors=False)
    assert not list(path.glob("*.safetensors"))
    with pytest.raises(InputError):
        load_target(path)
    target = load_target(path, allow_pickle=True)
    reference = torch.load(path / "pytorch_model.bin", weights_only=True)
    name = "transformer.wte.weight"
    assert torch.equal(target.model.state_dict()[name], reference[name])
