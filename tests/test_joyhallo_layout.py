"""JoyHallo: the full-size `joyhallo` configuration has exactly the state dict of its net.pth as its own code
builds it (tests/data/joyhallo_keys.tsv, written by tests/make_joyhallo_keys.py), its file is told from Hallo's
by its keys and loaded strictly, and its shared audio attention is Hallo's three branches with one attention."""

from pathlib import Path

import pytest
import torch

from emo_pipeline.config import hallo_config, joyhallo_config, tiny_config, tiny_joyhallo_config
from emo_pipeline.io import loading
from emo_pipeline.io.loading import CheckpointError, expected_shapes, load_net, network_config
from emo_pipeline.models.attention import ProjectionCache
from emo_pipeline.models.audio_attention import AudioAttention, FrameAudio
from emo_pipeline.portrait import region_masks
from emo_pipeline.tiny import randomize_, tiny_net
from test_hallo_layout import header_counts, read_reference_keys

KEYS = Path(__file__).parent / "data" / "joyhallo_keys.tsv"
NETWORKS = ("reference_unet", "denoising_unet", "face_locator", "imageproj", "audioproj")


def test_joyhallo_config_matches_net_pth_keys_and_shapes():
    reference = read_reference_keys(KEYS)
    assert len(reference) == header_counts(KEYS)["all"][0] == 2496
    ours = {k: tuple(v) for k, v in expected_shapes(joyhallo_config()).items()}
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_joyhallo_parameter_counts_match_reference_header():
    counts = header_counts(KEYS)
    ours = expected_shapes(joyhallo_config())
    for network in NETWORKS:
        mine = [s for k, s in ours.items() if k.startswith(network + ".")]
        assert (len(mine), sum(torch.Size(s).numel() for s in mine)) == counts[network], network
    assert sum(torch.Size(s).numel() for s in ours.values()) == counts["all"][1] == 2_373_258_004


def test_joyhallo_is_hallo_without_two_audio_attentions():
    hallo, joy = expected_shapes(hallo_config()), expected_shapes(joyhallo_config())
    assert set(joy) < set(hallo)
    removed = set(hallo) - set(joy)
    assert removed and all(".audio_modules." in k and (".attn2_1." in k or ".attn2_2." in k) for k in removed)
    assert len(removed) == 2 * 16 * 5  # 16 audio modules, two attentions of five tensors each
    assert {k: hallo[k] for k in joy} == joy


def write_pickle(net, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def test_joyhallo_net_pth_is_told_from_hallo_by_its_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "hallo_config", lambda: tiny_config(name="hallo"))
    monkeypatch.setattr(loading, "joyhallo_config", lambda: tiny_joyhallo_config(name="joyhallo"))
    joy = write_pickle(tiny_net(tiny_joyhallo_config(name="joyhallo"), seed=1), tmp_path / "joyhallo" / "net.pth")
    hallo = write_pickle(tiny_net(tiny_config(name="hallo"), seed=1), tmp_path / "hallo" / "net.pth")
    config = network_config(joy)
    assert (config.name, config.family, config.spec.shared_audio_attention) == ("joyhallo", "joyhallo", True)
    assert network_config(hallo).family == "emo"
    net = load_net(joy)  # strict: every key, nothing else
    assert net.config.family == "joyhallo"
    assert "JoyHallo net.pth" in loading.describe_checkpoint(joy)  # `inspect`
    converted = loading.convert_checkpoint(joy, tmp_path / "joyhallo.safetensors", dtype=torch.float16)  # `convert`
    assert network_config(converted).family == "joyhallo" and "JoyHallo family" in loading.describe_checkpoint(converted)
    shared = next(k for k in net.state_dict() if ".attn2_0." in k)
    assert torch.equal(load_net(converted).state_dict()[shared], net.state_dict()[shared].half().float())
    # one of Hallo's extra attentions in a JoyHallo file: neither layout, refused with what is wrong
    state = torch.load(joy, weights_only=True)
    extra = next(k for k in expected_shapes(tiny_config()) if ".attn2_1." in k)
    state[extra] = torch.zeros(expected_shapes(tiny_config())[extra])
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="against JoyHallo.s layout, 1 unexpected key"):
        network_config(tmp_path / "odd.pth")


@torch.no_grad()
@pytest.mark.parametrize("silent_rows", [0, 3])
def test_shared_attention_is_three_branches_of_one_attention(silent_rows):
    """JoyHallo's block equals Hallo's with attn2_1 and attn2_2 set to copies of attn2_0 (its attention.py: one
    attention's output times the full, face and lip masks, each through its zero conv, summed)."""
    torch.manual_seed(0)
    shared = randomize_(AudioAttention(16, 16, 4, 8, 4, masked=True, shared=True), 1, scale=0.2)
    for p in shared.parameters():
        p.add_(0.05)
    hallo = AudioAttention(16, 16, 4, 8, 4, masked=True)
    state = shared.state_dict()
    block = "transformer_blocks.0."
    for name in ("attn2_1", "attn2_2"):
        state.update({k.replace("attn2_0", name): v for k, v in shared.state_dict().items() if ".attn2_0." in k})
    hallo.load_state_dict(state, strict=True)
    assert not any(".attn2_1." in k or ".attn2_2." in k for k in shared.state_dict())
    assert block + "attn2_0.to_q.weight" in shared.state_dict()
    x = torch.randn(6, 16, 4, 4)
    tokens = torch.randn(6, 3, 8)
    heard = None if not silent_rows else (False,) * silent_rows + (True,) * (6 - silent_rows)
    if silent_rows:
        tokens[:silent_rows] = 0
    masks = region_masks((0.2, 0.2, 0.8, 0.8), (0.4, 0.6, 0.6, 0.7), 4, levels=1)[0]
    weights = (1.0, 0.7, 1.3)
    expected = hallo(x, FrameAudio(tokens), masks, weights)
    got = shared(x, FrameAudio(tokens, heard=heard, cache=ProjectionCache()), masks, weights)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got - x).abs().max() > 1e-2
