"""The full-size `echomimic` configuration has exactly the state dicts of EchoMimic's networks, as its
own code builds them (tests/data/echomimic_keys.tsv, written by tests/make_echomimic_keys.py)."""

from pathlib import Path

import torch

from emo_pipeline.config import echomimic_acc_config, echomimic_config
from emo_pipeline.io.loading import expected_shapes

KEYS = Path(__file__).parent / "data" / "echomimic_keys.tsv"


def read_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in KEYS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        network, key, shape = line.split("\t")
        keys[f"{network}.{key}"] = tuple(int(s) for s in shape.split(",") if s)
    return keys


def test_echomimic_config_matches_every_key_and_shape_of_its_code():
    reference = read_keys()
    for config in (echomimic_config(), echomimic_acc_config()):
        ours = {k: tuple(v) for k, v in expected_shapes(config).items()}
        assert sorted(set(reference) - set(ours)) == []
        assert sorted(set(ours) - set(reference)) == []
        assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_counts_match_the_header():
    """Per network: tensors and values as the header of the key list states them."""
    header = [l for l in KEYS.read_text().splitlines() if l.startswith("# ") and " tensors, " in l
              and not l.startswith("#  ")]
    ours = expected_shapes(echomimic_config())
    for line in header:
        network = line[2:].split(":")[0]
        tensors = int(line.split(": ")[1].split(" tensors")[0])
        values = int(line.split(" tensors, ")[1].split(" values")[0].replace(",", ""))
        mine = {k: s for k, s in ours.items() if k.startswith(network + ".")}
        assert len(mine) == tensors and sum(torch.Size(s).numel() for s in mine.values()) == values, network
    assert {l[2:].split(":")[0] for l in header} == {"reference_unet", "denoising_unet", "face_locator"}
