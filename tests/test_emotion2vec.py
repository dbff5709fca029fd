"""emotion2vec+ large (emo_pipeline/audio/emotion2vec.py), the encoder MEMO labels its clips' emotion with.

* Its state dict is that of FunASR's own Emotion2vec for emotion2vec+ large (tests/data/emotion2vec_keys.tsv,
  written by tests/make_emotion2vec_keys.py from FunASR's code), key for key and shape for shape.
* A tiny checkpoint in the hub file's layout (a pickled OrderedDict of FunASR's keys; also wrapped under
  "model", with a "module." prefix, without the pre-training decoder, with other entries beside the network)
  loads strictly; a missing or misshapen tensor, a network of another size, a pickle carrying code and a
  damaged file are refused plainly.
* The forward pass of a tiny network equals an independent computation written here with plain tensor
  operations (conv arithmetic, layer norms by mean and variance, attention by matrix products and softmax,
  ALiBi slopes 2^(-8(h+1)/H)), and the conv output length follows floor((n - k) / s + 1).
* Bad input (empty audio, another sample rate, too short, NaN) is said plainly.
Parity with FunASR's code on random full-size weights: benchmarks/emotion2vec_side_by_side.py.
"""

from __future__ import annotations

import collections
import math
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from emo_pipeline.audio import emotion2vec as e2v
from emo_pipeline.audio.emotion2vec import (LARGE, Emotion2vec, config_from_shapes, expected_shapes, feature_frames,
                                            load_emotion2vec, min_samples, prepare_segment, segment_embedding)
from emo_pipeline.io.loading import CheckpointError
from test_hallo_layout import header_counts, read_reference_keys

KEYS = Path(__file__).parent / "data" / "emotion2vec_keys.tsv"
NETWORK = "emotion2vec_plus_large"
TINY = replace(LARGE, embed_dim=32, depth=2, prenet_depth=1, num_heads=4, num_alibi_heads=4,
               conv_layers=((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2, conv_pos_width=15,
               conv_pos_groups=4, conv_pos_depth=3, num_extra_tokens=3, decoder_dim=16, decoder_groups=4,
               decoder_kernel=5, decoder_layers=2)


def reference_keys() -> dict[str, tuple[int, ...]]:
    return {name.split(".", 1)[1]: shape for name, shape in read_reference_keys(KEYS).items()}


def tiny_state(config=TINY, seed: int = 0) -> collections.OrderedDict:
    """Random weights at roughly a trained network's scale (norm gains near 1, ALiBi scales near 1)."""
    gen = torch.Generator().manual_seed(seed)
    state = collections.OrderedDict()
    for key, shape in expected_shapes(config).items():
        value = torch.randn(shape, generator=gen)
        if key.endswith("alibi_scale") or (len(shape) == 1 and "norm" in key and key.endswith("weight")) \
                or ".conv_layers." in key and key.endswith(".2.1.weight") or key.endswith("project_features.1.weight"):
            value = 1 + 0.2 * value
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            value = value / math.sqrt(fan_in)
        else:
            value = 0.1 * value
        state[key] = value
    return state


def tiny_model(config=TINY, seed: int = 0) -> Emotion2vec:
    model = Emotion2vec(config).eval()
    model.load_state_dict(tiny_state(config, seed))
    return model


# ---- the key list ------------------------------------------------------------------------------------------

def test_the_large_network_has_funasrs_keys_and_shapes():
    theirs = reference_keys()
    counts = header_counts(KEYS)
    assert len(theirs) == counts["all"][0] == counts[NETWORK][0] == 195
    ours = {k: tuple(v) for k, v in expected_shapes(LARGE).items()}
    assert sorted(set(theirs) - set(ours)) == []
    assert sorted(set(ours) - set(theirs)) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}
    assert sum(math.prod(s) for s in ours.values()) == counts["all"][1] == 164_048_921


def test_the_large_shape_is_read_back_from_the_key_list():
    shapes = {k: torch.Size(s) for k, s in reference_keys().items()}
    assert config_from_shapes(shapes) == LARGE
    bare = {k: s for k, s in shapes.items() if ".decoder." not in k and not k.startswith("proj.")}
    assert config_from_shapes(bare) == replace(LARGE, decoder_layers=0, num_classes=0)
    assert set(expected_shapes(replace(LARGE, decoder_layers=0, num_classes=0))) == set(bare)


# ---- the checkpoint ----------------------------------------------------------------------------------------

def _assert_same(model: Emotion2vec, state: dict) -> None:
    got = model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize("layout", ["flat", "model", "state_dict", "module_prefix"])
def test_a_tiny_checkpoint_in_the_hub_layout_loads_strictly(tmp_path, layout):
    state = tiny_state()
    saved = {"flat": state, "model": {"model": state, "optimizer": {"step": 3}},
             "state_dict": {"state_dict": state},
             "module_prefix": collections.OrderedDict((f"module.{k}", v) for k, v in state.items())}[layout]
    torch.save(saved, tmp_path / "model.pt")
    model = load_emotion2vec(tmp_path / "model.pt", expected=None)
    assert model.config == TINY and not model.training
    _assert_same(model, state)
    assert model.ignored_keys == []


def test_entries_outside_the_network_are_left_and_named(tmp_path):
    state = tiny_state()
    saved = collections.OrderedDict(state)
    saved["_ema.blocks.0.norm1.weight"] = torch.ones(32)
    saved["num_updates"] = torch.tensor(7)
    torch.save(saved, tmp_path / "model.pt")
    model = load_emotion2vec(tmp_path / "model.pt", expected=None)
    _assert_same(model, state)
    assert model.ignored_keys == ["_ema.blocks.0.norm1.weight", "num_updates"]


def test_a_file_without_the_decoder_and_head_loads_the_encoder(tmp_path):
    state = collections.OrderedDict((k, v) for k, v in tiny_state().items()
                                    if ".decoder." not in k and not k.startswith("proj."))
    torch.save(state, tmp_path / "model.pt")
    model = load_emotion2vec(tmp_path / "model.pt", expected=None)
    assert model.config.encoder_fields() == TINY.encoder_fields()
    assert (model.config.decoder_layers, model.config.num_classes) == (0, 0)
    assert model.proj is None and model.modality_encoders["AUDIO"].decoder is None
    x = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.allclose(model(x), tiny_model()(x), atol=1e-6)


def test_a_missing_or_misshapen_tensor_is_refused(tmp_path):
    state = tiny_state()
    del state["blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing\.pt.*1 missing key\(s\): blocks\.1\.mlp\.fc2\.bias"):
        load_emotion2vec(tmp_path / "missing.pt", expected=None)
    state = tiny_state()
    state["blocks.0.attn.qkv.weight"] = torch.zeros(96, 31)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="wrong shape: blocks.0.attn.qkv.weight"):
        load_emotion2vec(tmp_path / "shape.pt", expected=None)
    torch.save({"a": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an emotion2vec network"):
        load_emotion2vec(tmp_path / "other.pt")


def test_a_network_of_another_size_is_not_taken_for_the_large_one(tmp_path):
    torch.save(tiny_state(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"another shape: .*embed_dim 32 \(expected 1024\)"):
        load_emotion2vec(tmp_path / "model.pt")


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_carrying_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = tiny_state()
    state["payload"] = Exploit()
    with open(tmp_path / "model.pt", "wb") as f:
        pickle.dump(state, f, protocol=2)
    with pytest.raises(CheckpointError, match="carries code or Python objects besides tensors"):
        load_emotion2vec(tmp_path / "model.pt", expected=None)
    assert not (tmp_path / "pwned.txt").exists()


def test_a_damaged_or_wrong_file_is_said_so(tmp_path):
    torch.save(tiny_state(), tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_emotion2vec(tmp_path / "cut.pt", expected=None)
    (tmp_path / "pointer.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    with pytest.raises(CheckpointError, match="Git LFS pointer"):
        load_emotion2vec(tmp_path / "pointer.pt")
    with pytest.raises(FileNotFoundError):
        load_emotion2vec(tmp_path / "absent.pt")


# ---- the computation ---------------------------------------------------------------------------------------

def test_feature_frames_follow_the_conv_length_formula():
    def by_formula(n: int) -> int:
        for _, k, s in LARGE.conv_layers:
            n = math.floor((n - k) / s + 1)
        return n

    assert min_samples() == 400 and feature_frames(399) == 0 and feature_frames(400) == 1
    for n in (400, 719, 720, 16000, 16319, 16320, 48000, 48001):
        assert feature_frames(n) == by_formula(n)
    assert feature_frames(16000) == 49 and feature_frames(48000) == 149
    model = tiny_model()
    with torch.no_grad():
        for n in (400, 1234, 16000):
            assert model(torch.randn(1, n)).shape == (1, feature_frames(n, TINY), TINY.embed_dim)


def test_alibi_slopes_and_bias():
    assert e2v.alibi_slopes(16) == pytest.approx([2 ** (-8 * (h + 1) / 16) for h in range(16)])
    assert e2v.alibi_slopes(12) == pytest.approx([2 ** -(h + 1) for h in range(8)]
                                                 + [2 ** -(h + 0.5) for h in range(4)])
    bias = e2v.alibi_bias(5, 4)
    assert bias[2, 1, 4] == pytest.approx(-3 * 2 ** (-8 * 3 / 4)) and bias[0].diagonal().abs().sum() == 0


def _layer_norm(x, weight=None, bias=None, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    return y if weight is None else y * weight + bias


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _conv1d(x, weight, bias, stride=1, padding=0, groups=1):
    """x [C_in, T] by explicit sums over the kernel taps."""
    c_in, _ = x.shape
    c_out, per_group, k = weight.shape
    x = torch.nn.functional.pad(x, (padding, padding))
    t_out = (x.shape[1] - k) // stride + 1
    out = torch.zeros(c_out, t_out, dtype=x.dtype)
    outs_per_group = c_out // groups
    for o in range(c_out):
        g = o // outs_per_group
        xs = x[g * per_group:(g + 1) * per_group]
        for j in range(k):
            out[o] += weight[o, :, j] @ xs[:, j: j + stride * (t_out - 1) + 1: stride]
        if bias is not None:
            out[o] += bias[o]
    return out


def independent_features(state: dict, config, samples: torch.Tensor) -> torch.Tensor:
    """emotion2vec's frame features of one row of samples, from the state dict with plain operations."""
    a = e2v.AUDIO
    x = samples.double()[None]
    for i, (_, _, stride) in enumerate(config.conv_layers):
        p = f"{a}local_encoder.conv_layers.{i}."
        x = _conv1d(x, state[p + "0.weight"].double(), None, stride=stride)
        x = _gelu(_layer_norm(x.T, state[p + "2.1.weight"].double(), state[p + "2.1.bias"].double()).T)
    x = _layer_norm(x.T, state[a + "project_features.1.weight"].double(), state[a + "project_features.1.bias"].double())
    x = x @ state[a + "project_features.2.weight"].double().T + state[a + "project_features.2.bias"].double()
    pos, k = x.T, config.conv_pos_kernel
    for i in range(1, config.conv_pos_depth + 1):
        pos = _conv1d(pos, state[f"{a}relative_positional_encoder.{i}.0.weight"].double(),
                      state[f"{a}relative_positional_encoder.{i}.0.bias"].double(), padding=k // 2,
                      groups=config.conv_pos_groups)
        pos = _gelu(_layer_norm(pos.T).T)
    x = x + pos.T
    frames, extra, heads = x.shape[0], config.num_extra_tokens, config.num_heads
    x = torch.cat([state[a + "extra_tokens"][0].double(), x])
    slopes = torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)], dtype=torch.float64)
    scale = state[a + "alibi_scale"].double().clamp_min(0).reshape(heads)
    bias = torch.zeros(heads, frames + extra, frames + extra, dtype=torch.float64)
    for i in range(frames):
        for j in range(frames):
            bias[:, extra + i, extra + j] = -scale * slopes * abs(i - j)

    def block(x, p):
        d = x.shape[1] // heads
        qkv = x @ state[p + "attn.qkv.weight"].double().T + state[p + "attn.qkv.bias"].double()
        q, kk, v = qkv.split(x.shape[1], dim=1)
        out = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            logits = q[:, sl] @ kk[:, sl].T / math.sqrt(d) + bias[h]
            out.append(torch.softmax(logits, dim=-1) @ v[:, sl])
        attn = torch.cat(out, dim=1) @ state[p + "attn.proj.weight"].double().T + state[p + "attn.proj.bias"].double()
        x = _layer_norm(x + attn, state[p + "norm1.weight"].double(), state[p + "norm1.bias"].double())
        hidden = _gelu(x @ state[p + "mlp.fc1.weight"].double().T + state[p + "mlp.fc1.bias"].double())
        mlp = hidden @ state[p + "mlp.fc2.weight"].double().T + state[p + "mlp.fc2.bias"].double()
        return _layer_norm(x + mlp, state[p + "norm2.weight"].double(), state[p + "norm2.bias"].double())

    norm = a + "context_encoder.norm."
    x = _layer_norm(x, state[norm + "weight"].double(), state[norm + "bias"].double())
    for i in range(config.prenet_depth):
        x = block(x, f"{a}context_encoder.blocks.{i}.")
    for i in range(config.depth):
        x = block(x, f"blocks.{i}.")
    return x[extra:]


def test_a_tiny_forward_pass_equals_an_independent_computation():
    state = tiny_state(seed=3)
    model = Emotion2vec(TINY).eval()
    model.load_state_dict(state)
    samples = torch.randn(1, 3000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.extract_features(samples)
    theirs = independent_features(state, TINY, samples[0])
    assert ours["x"].shape == (1, feature_frames(3000, TINY), TINY.embed_dim) == (1, *theirs.shape)
    assert ours["padding_mask"] is None
    assert torch.allclose(ours["x"][0].double(), theirs, atol=2e-5), (ours["x"][0].double() - theirs).abs().max()
    with torch.no_grad():
        whole = model.extract_features(samples, remove_extra_tokens=False)["x"]
    assert whole.shape[1] == theirs.shape[0] + TINY.num_extra_tokens
    assert torch.equal(whole[:, TINY.num_extra_tokens:], ours["x"])


def test_a_padding_mask_gives_the_frames_of_each_rows_length():
    model = tiny_model()
    samples = torch.randn(2, 4000)
    padding = torch.zeros(2, 4000, dtype=torch.bool)
    padding[1, 2500:] = True
    with torch.no_grad():
        out = model.extract_features(samples, padding_mask=padding)
        alone = model.extract_features(samples[:1])
    frames = feature_frames(4000, TINY)
    assert out["padding_mask"].shape == (2, frames)
    assert not out["padding_mask"][0].any()
    assert out["padding_mask"][1].tolist() == [i >= feature_frames(2500, TINY) for i in range(frames)]
    assert torch.allclose(out["x"][0], alone["x"][0], atol=1e-5)  # the unpadded row is unchanged


def test_segment_embedding_is_the_time_mean_of_the_layer_normed_channel_0():
    model = tiny_model()
    left = torch.randn(8000, generator=torch.Generator().manual_seed(5)) * 0.3 + 0.1
    stereo = torch.stack([left, torch.randn(8000)])
    normed = (left - left.mean()) / torch.sqrt(left.var(unbiased=False) + 1e-5)
    with torch.no_grad():
        expected = model(normed[None]).mean(dim=1)[0]
    got = segment_embedding(model, stereo, 16000)
    assert got.shape == (TINY.embed_dim,)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(segment_embedding(model, left, 16000), got, atol=1e-6)
    # gain and offset go (but for the 1e-5 in the variance)
    assert torch.allclose(prepare_segment(left * 7 + 3, 16000), prepare_segment(left, 16000), atol=5e-4)


# ---- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples, rate, message", [
    (torch.zeros(0), 16000, "empty"),
    (torch.zeros(2, 0), 16000, "empty"),
    (torch.zeros(16000), 44100, "16000 Hz audio; this segment is at 44100 Hz"),
    (torch.zeros(200), 16000, "fewer than one emotion2vec frame"),
    (torch.full((1000,), float("nan")), 16000, "NaN or infinite"),
    (torch.zeros(1, 1, 1000), 16000, "must be"),
])
def test_bad_audio_is_refused_plainly(samples, rate, message):
    with pytest.raises(ValueError, match=message):
        segment_embedding(tiny_model(), samples, rate)


def test_extract_features_refuses_what_it_does_not_do():
    model = tiny_model()
    with pytest.raises(ValueError, match="inference-only"):
        model.extract_features(torch.zeros(1, 1000), mask=True)
    with pytest.raises(ValueError, match="shorter than one emotion2vec frame"):
        model.extract_features(torch.zeros(1, 100))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        model.extract_features(torch.zeros(1000))
