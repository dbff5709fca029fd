"""MEMO's parts as they are built: key lists from its own code (tests/data/memo_keys.tsv), and, when a
MEMO checkout is given (MEMO_PATH), the same outputs as its own modules on shared random weights."""

import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from emo_pipeline.models.memo_audio import MemoAudioModule

KEYS = Path(__file__).parent / "data" / "memo_keys.tsv"


def frames_first(x: torch.Tensor) -> torch.Tensor:
    """MEMO's [B, C, F, H, W] (or audio [B, F, T, C]) → our frames-in-the-batch [B·F, ...]."""
    return x.transpose(1, 2).flatten(0, 1) if x.dim() == 5 else x.flatten(0, 1)


def memo_keys() -> dict[str, dict[str, tuple[int, ...]]]:
    networks: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        network, key, shape = line.split("\t")
        networks[network][key] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return networks


def test_every_audio_module_matches_memos_key_list():
    """The 16 audio modules of MEMO's diffusion net, each built from its own widths: every key and shape."""
    keys = memo_keys()["diffusion_net"]
    prefixes = sorted({k[: k.index(".audio_modules.") + len(".audio_modules.") + 2] for k in keys
                       if ".audio_modules." in k})
    assert len(prefixes) == 16
    last_modules = 0
    for prefix in prefixes:
        theirs = {k[len(prefix):]: s for k, s in keys.items() if k.startswith(prefix)}
        channels, inner = theirs["norm.weight"][0], theirs["proj_in.weight"][0]
        last = "transformer_blocks.0.audio_ff.net.2.bias" not in theirs
        last_modules += last
        with torch.device("meta"):
            module = MemoAudioModule(channels, inner, last=last)
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert ours == theirs, prefix
    assert last_modules == 1  # up_blocks.3's last module hands no audio on


def test_emotion_changes_the_output_and_audio_is_handed_on():
    torch.manual_seed(0)
    module = MemoAudioModule(64, 32, audio_dim=48).eval()
    for p in module.parameters():  # proj_out and friends start at zero in training: make every path count
        torch.nn.init.normal_(p, std=0.05)
    x, audio = torch.randn(6, 64, 4, 4), torch.randn(6, 32, 48)  # 2 guidance rows of 3 frames
    with torch.no_grad():
        neutral, handed = module(x, audio, torch.tensor([9, 0]))
        happy, _ = module(x, audio, torch.tensor([9, 3]))
    assert neutral.shape == x.shape and handed.shape == (6, 32, 48)
    assert torch.equal(neutral[:3], happy[:3]) and not torch.allclose(neutral[3:], happy[3:])  # per guidance row
    with torch.device("meta"):
        last = MemoAudioModule(64, 32, audio_dim=48, last=True)
    assert last(x.to("meta"), audio.to("meta"), torch.tensor([0, 1], device="meta"))[1] is None


MEMO = os.environ.get("MEMO_PATH")


@pytest.fixture(scope="module")
def memo():
    """MEMO's classes from the checkout, imported as tests/make_memo_keys.py imports them (einops checked,
    the xformers stand-in, no bytecode written into the checkout)."""
    from make_memo_keys import load_memo

    return load_memo(MEMO)


@pytest.mark.skipif(not MEMO, reason="set MEMO_PATH to a checkout of memoavatar/memo")
@pytest.mark.parametrize("last", [False, True], ids=["module", "last-module"])
def test_audio_module_equals_memos_own(memo, last):
    torch.manual_seed(0)
    channels, inner, audio_dim = 64, 64, 48
    theirs = memo.Transformer3DModel(num_attention_heads=8, attention_head_dim=inner // 8, in_channels=channels,
                                cross_attention_dim=audio_dim, use_audio_module=True, emo_drop_rate=0.05,
                                is_final_block=last).eval()
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.05)
    ours = MemoAudioModule(channels, inner, audio_dim=audio_dim, last=last).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, audio, emotion = torch.randn(2, channels, 3, 4, 4), torch.randn(2, 3, 32, audio_dim), torch.tensor([9, 4])
    with torch.no_grad():
        expected, expected_audio = theirs(x, encoder_hidden_states=audio, emotion=emotion)
        got, got_audio = ours(frames_first(x), frames_first(audio), emotion)
        expected = frames_first(expected)
    assert (got - expected).abs().max() / expected.abs().max() < 1e-5
    if last:
        assert expected_audio is None and got_audio is None
    else:
        assert (got_audio - expected_audio).abs().max() / expected_audio.abs().max() < 1e-5


@pytest.mark.skipif(not MEMO, reason="set MEMO_PATH to a checkout of memoavatar/memo")
def test_memory_attention_equals_memos_processor_over_clips(memo):
    """MEMO's schedule: clip 0 rebuilds the memory from its past frames (the portrait) at every step; each
    later clip adds its past frames once, at step 0, and keeps the memory for the other steps."""
    from diffusers.models.attention_processor import Attention

    from emo_pipeline.models.memory_attention import TemporalMemory, memory_attention

    torch.manual_seed(0)
    attn = Attention(query_dim=64, heads=8, dim_head=8, bias=False).eval()
    theirs, ours = memo.MemoryLinearAttnProcessor(), TemporalMemory()
    worst = 0.0
    for clip in range(3):
        past = torch.randn(6, 16, 64)
        for step in range(3):
            x = torch.randn(6, 16, 64)
            with torch.no_grad():
                expected = theirs(attn, x, past, is_new_audio=clip == 0, update_past_memory=step == 0)
                if clip == 0:
                    ours = TemporalMemory()  # MEMO resets it for the first clip, every step
                got = memory_attention(attn, x, past if clip == 0 or step == 0 else None, ours)
            worst = max(worst, float((got - expected).abs().max() / expected.abs().max()))
    assert worst < 1e-5, worst


def test_memory_attention_against_a_written_out_computation():
    """One head at a time, frame by frame: out_i = q_i·(0.9·M_KV + Σ k_jᵀv_j) / q_i·(0.9·M_Z + Σ k_j), with
    the memory of two past clips, the older one faded by 0.9 per later frame."""
    from diffusers.models.attention_processor import Attention

    from emo_pipeline.models.memory_attention import TemporalMemory, memory_attention

    torch.manual_seed(1)
    heads, d, frames = 2, 4, 3
    attn = Attention(query_dim=heads * d, heads=heads, dim_head=d, bias=False).eval()
    pasts, x = [torch.randn(1, frames, heads * d) for _ in range(2)], torch.randn(1, frames, heads * d)
    memory = TemporalMemory()
    with torch.no_grad():
        memory_attention(attn, x, pasts[0], memory)
        got = memory_attention(attn, x, pasts[1], memory)
        inner = torch.zeros(frames, heads * d)
        for h in range(heads):
            part = slice(h * d, (h + 1) * d)
            q = torch.softmax(attn.to_q(x)[0, :, part], dim=-1) * d ** -0.5
            k, v = torch.softmax(attn.to_k(x)[0, :, part], dim=0), attn.to_v(x)[0, :, part]
            mkv, mz = torch.zeros(d, d), torch.zeros(d)
            for age, past in enumerate(reversed(pasts)):  # the newer clip first
                pk, pv = torch.softmax(attn.to_k(past)[0, :, part], dim=0), attn.to_v(past)[0, :, part]
                for j in range(frames):
                    w, fade = 0.9 ** (frames - 1 - j), 0.9 ** (age * frames)  # in-clip weight, older clips' fade
                    mkv += w * w * fade * torch.outer(pk[j], pv[j])  # k and v both weighted
                    mz += w * fade * pk[j]
            kv = 0.9 * mkv + sum(torch.outer(k[i], v[i]) for i in range(frames))
            z = 0.9 * mz + k.sum(0)
            for i in range(frames):
                inner[i, part] = (q[i] @ kv) / (q[i] @ z)
        expected = attn.to_out[0](inner)[None]
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not MEMO, reason="set MEMO_PATH to a checkout of memoavatar/memo")
def test_memory_temporal_module_equals_memos_over_clips(memo):
    """Our AnimateDiff-layout temporal module, run MEMO's way, against MemoryLinearAttnTemporalModule with
    its memory processors (as its xformers switch installs them), on shared random weights, over MEMO's
    schedule: clip 0 rebuilt from the portrait at every step, later clips add their past frames at step 0."""
    from emo_pipeline.models.memory_attention import add_past_frames, memory_temporal_module
    from emo_pipeline.models.temporal import TemporalModule

    torch.manual_seed(0)
    c, frames, b, side = 64, 4, 2, 3
    theirs = memo.MemoryLinearAttnTemporalModule(c, num_transformer_block=1, temporal_position_encoding=True,
                                            temporal_position_encoding_max_len=32).eval()
    for block in theirs.temporal_transformer.transformer_blocks[0].attention_blocks:
        block.set_processor(memo.MemoryLinearAttnProcessor())
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.1)
    ours = TemporalModule(c, heads=8, max_len=32, groups=32).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    worst = 0.0
    memories = None
    for clip in range(3):
        past = torch.randn(b, c, frames, side, side)
        with torch.no_grad():  # ours: the clip's memory once, before its steps (it depends on the past alone)
            memories = add_past_frames(ours, frames_first(past), frames, memories if clip else None)
        for step in range(2):
            x = torch.randn(b, c, frames, side, side)
            with torch.no_grad():
                expected = theirs(x, past, None, is_new_audio=clip == 0, update_past_memory=step == 0)
                got = memory_temporal_module(ours, frames_first(x), frames, memories)
            expected = frames_first(expected)
            worst = max(worst, float((got - expected).abs().max() / expected.abs().max()))
    assert worst < 1e-5, worst
