"""The full-size `hallo` configuration has exactly the state dict of Hallo's net.pth."""

import torch

from conftest import SHARED_REFERENCE
from emo_pipeline.config import emo_config, hallo_config
from emo_pipeline.loading import expected_shapes


def read_reference_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (SHARED_REFERENCE / "hallo_net_keys.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, _dtype = line.split("\t")
        keys[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


def test_hallo_config_matches_net_pth_keys_and_shapes():
    reference = read_reference_keys()
    assert len(reference) == 2656
    ours = {k: tuple(v) for k, v in expected_shapes(hallo_config()).items()}
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_hallo_parameter_count_matches_reference_header():
    header = (SHARED_REFERENCE / "hallo_net_keys.tsv").read_text().splitlines()
    total = next(int(l.split("total params:")[1]) for l in header if "total params:" in l)
    ours = sum(torch.Size(s).numel() for s in expected_shapes(hallo_config()).values())
    assert ours == total


def test_emo_config_adds_only_speed_layers_and_single_audio_attention():
    hallo = expected_shapes(hallo_config())
    emo = expected_shapes(emo_config())
    added = set(emo) - set(hallo)
    assert added and all("speed" in k or ".attn2." in k for k in added)
    assert any(k.startswith("speed_encoder.") for k in added)
    assert any(".speed_attention." in k for k in added)
