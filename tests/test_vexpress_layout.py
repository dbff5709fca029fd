"""V-Express: the full-size `v-express` configuration has exactly the state dicts of its five files as its own
code builds them (tests/data/vexpress_keys.tsv, written by tests/make_vexpress_keys.py), bar reference_net.bin's
output layer, which V-Express computes and discards; its download folder is recognised and loaded strictly,
motion_module.bin over denoising_unet.bin as its inference.py loads them."""

from pathlib import Path

import pytest
import torch

from emo_pipeline.config import echomimic_config, tiny_vexpress_config, vexpress_config
from emo_pipeline.io import loading
from emo_pipeline.io.loading import CheckpointError, expected_shapes, load_net, network_config
from emo_pipeline.io.model_files import audio_encoder_path, find_net, vae_path
from emo_pipeline.tiny import write_tiny_vexpress_folder
from test_hallo_layout import header_counts, read_reference_keys

KEYS = Path(__file__).parent / "data" / "vexpress_keys.tsv"
# its file → our part of the network
PARTS = {"reference_net": "reference_unet", "denoising_unet": "denoising_unet", "v_kps_guider": "face_locator",
         "audio_projection": "audioproj"}


def reference_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for name, shape in read_reference_keys(KEYS).items():
        network, key = name.split(".", 1)
        keys[f"{PARTS[network]}.{key}"] = shape
    return keys


def test_vexpress_config_matches_its_files_keys_and_shapes():
    theirs = reference_keys()
    assert len(theirs) == header_counts(KEYS)["all"][0] == 2138
    ours = {k: tuple(v) for k, v in expected_shapes(vexpress_config()).items()}
    # the one difference: reference_net.bin's conv_out, whose output V-Express throws away
    assert sorted(set(theirs) - set(ours)) == ["reference_unet.conv_out.bias", "reference_unet.conv_out.weight"]
    assert sorted(set(ours) - set(theirs)) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}


def test_vexpress_parameter_counts_match_its_header():
    counts = header_counts(KEYS)
    ours = expected_shapes(vexpress_config())
    for network, part in PARTS.items():
        mine = [s for k, s in ours.items() if k.startswith(part + ".")]
        tensors, values = counts[network]
        if network == "reference_net":  # less its conv_out: 4×320×3×3 + 4
            tensors, values = tensors - 2, values - (4 * 320 * 9 + 4)
        assert (len(mine), sum(torch.Size(s).numel() for s in mine)) == (tensors, values), network


def test_vexpress_differs_from_echomimic_by_its_reference_attention_and_resampler():
    """Its denoising UNet is EchoMimic's with attn1_5/norm1_5 in every block and a 768-wide attn2; its ReferenceNet
    keeps attn2 and norm2, which EchoMimic's lacks."""
    vx, echo = expected_shapes(vexpress_config()), expected_shapes(echomimic_config())
    added = set(vx) - set(echo)
    unet_added = {k for k in added if k.startswith("denoising_unet.")}
    assert unet_added and all(".attn1_5." in k or ".norm1_5." in k for k in unet_added)
    assert len(unet_added) == 16 * 7  # 16 blocks: to_q, to_k, to_v, to_out.0 (weight, bias), norm1_5 (weight, bias)
    reference_added = {k for k in added if k.startswith("reference_unet.")}
    assert reference_added and all(".attn2." in k or ".norm2." in k for k in reference_added)
    assert {k.split(".")[0] for k in added} == {"denoising_unet", "reference_unet", "audioproj"}
    assert set(echo) - set(vx) == set()


def test_its_download_folder_loads_strictly_taking_motion_module_bin_over_denoising_unet_bin(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "vexpress_config", lambda: tiny_vexpress_config(name="v-express"))
    folder = write_tiny_vexpress_folder(tmp_path)
    assert find_net(folder) == folder
    for named_by in (folder, folder / "denoising_unet.bin", folder / "v_kps_guider.bin"):
        assert network_config(named_by).family == "vexpress"
    net = load_net(folder)
    motion = torch.load(folder / "motion_module.bin", weights_only=True)
    key = next(iter(motion))
    assert torch.equal(net.state_dict()["denoising_unet." + key], motion[key])  # not denoising_unet.bin's zeros
    assert torch.load(folder / "denoising_unet.bin", weights_only=True)[key].abs().max() == 0
    guider = torch.load(folder / "v_kps_guider.bin", weights_only=True)
    assert torch.equal(net.face_locator.conv_in.weight, guider["conv_in.weight"])
    assert vae_path(folder).name == "vae" and audio_encoder_path(folder, net.config).name == "wav2vec"
    described = loading.describe_checkpoint(folder)
    assert "V-Express" in described and "non-commercial" in described and "keys: all keys match" in described


def test_a_missing_or_foreign_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "vexpress_config", lambda: tiny_vexpress_config(name="v-express"))
    folder = write_tiny_vexpress_folder(tmp_path)
    (folder / "audio_projection.bin").unlink()
    with pytest.raises(FileNotFoundError, match="lacks audio_projection.bin.*download v-express"):
        network_config(folder)
    folder = write_tiny_vexpress_folder(tmp_path / "b")
    state = torch.load(folder / "v_kps_guider.bin", weights_only=True)
    state["stray.weight"] = torch.zeros(2)
    torch.save(state, folder / "v_kps_guider.bin")
    with pytest.raises(CheckpointError, match="v_kps_guider.bin: 1 key.*stray.weight"):
        network_config(folder)
