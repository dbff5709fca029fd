"""The full-size `memo` configuration has exactly the state dicts of MEMO's four networks, as its own code
builds them (tests/data/memo_keys.tsv, written by tests/make_memo_keys.py), under the prefixes its folders
are loaded into."""

from pathlib import Path

import torch

from emo_pipeline.config import memo_config
from emo_pipeline.io.loading import MEMO_PARTS, expected_shapes

KEYS = Path(__file__).parent / "data" / "memo_keys.tsv"


def read_keys() -> dict[str, tuple[int, ...]]:
    """MEMO's keys under our prefixes (its emotion classifier is not part of the network)."""
    prefix = {folder: ours for ours, folder in MEMO_PARTS}
    keys = {}
    for line in KEYS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        network, key, shape = line.split("\t")
        if network in prefix:
            keys[prefix[network] + key] = tuple(int(s) for s in shape.split(",") if s)
    return keys


def test_memo_config_matches_every_key_and_shape_of_its_code():
    reference = read_keys()
    for joint in (True, False):  # the resnets' norm span changes no key
        ours = {k: tuple(v) for k, v in expected_shapes(memo_config(resnet_joint_frames=joint)).items()}
        assert sorted(set(reference) - set(ours)) == []
        assert sorted(set(ours) - set(reference)) == []
        assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_counts_match_the_header():
    header = [l for l in KEYS.read_text().splitlines() if l.startswith("# ") and " tensors, " in l]
    ours = expected_shapes(memo_config())
    checked = set()
    for line in header:
        network = line[2:].split(":")[0]
        prefix = dict((folder, p) for p, folder in MEMO_PARTS).get(network)
        if prefix is None:
            continue
        tensors = int(line.split(": ")[1].split(" tensors")[0])
        values = int(line.split(" tensors, ")[1].split(" values")[0].replace(",", ""))
        mine = {k: s for k, s in ours.items() if k.startswith(prefix)}
        assert len(mine) == tensors and sum(torch.Size(s).numel() for s in mine.values()) == values, network
        checked.add(network)
    assert checked == {"reference_net", "diffusion_net", "image_proj", "audio_proj"}
