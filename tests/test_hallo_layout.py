"""The full-size `hallo` configuration has exactly the state dict of Hallo's net.pth, as its own code
builds it (tests/data/hallo_keys.tsv, written by tests/make_hallo_keys.py)."""

from pathlib import Path

import torch

from emo_pipeline.config import emo_config, hallo_config
from emo_pipeline.io.loading import expected_shapes

KEYS = Path(__file__).parent / "data" / "hallo_keys.tsv"


def read_reference_keys(path: Path = KEYS) -> dict[str, tuple[int, ...]]:
    """net.pth's keys (`<network>.<key>`) and shapes, from a key list in make_hallo_keys.py's format."""
    keys = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        network, key, shape = line.split("\t")
        keys[f"{network}.{key}"] = tuple(int(s) for s in shape.split(",") if s)
    return keys


def header_counts(path: Path = KEYS) -> dict[str, tuple[int, int]]:
    """Each network's (tensors, values) from the header lines, and 'all'."""
    counts = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and " tensors, " in line:
            name, rest = line[2:].split(": ", 1)
            tensors, values = rest.split(" tensors, ")
            counts[name] = (int(tensors), int(values.split(" values")[0].replace(",", "")))
    return counts


def test_hallo_config_matches_net_pth_keys_and_shapes():
    reference = read_reference_keys()
    assert len(reference) == header_counts()["all"][0] == 2656
    ours = {k: tuple(v) for k, v in expected_shapes(hallo_config()).items()}
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_hallo_parameter_count_matches_reference_header():
    counts = header_counts()
    ours = expected_shapes(hallo_config())
    for network in ("reference_unet", "denoising_unet", "face_locator", "imageproj", "audioproj"):
        mine = [s for k, s in ours.items() if k.startswith(network + ".")]
        assert (len(mine), sum(torch.Size(s).numel() for s in mine)) == counts[network], network
    assert sum(torch.Size(s).numel() for s in ours.values()) == counts["all"][1]


def test_emo_config_adds_only_speed_layers_and_single_audio_attention():
    hallo = expected_shapes(hallo_config())
    emo = expected_shapes(emo_config())
    added = set(emo) - set(hallo)
    assert added and all("speed" in k or ".attn2." in k for k in added)
    assert any(k.startswith("speed_encoder.") for k in added)
    assert any(".speed_attention." in k for k in added)
