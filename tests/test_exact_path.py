"""The exact (Hallo-default) path after the speed work: the same frames as the original code, and
each removed piece of work shown equal to computing it."""

import pytest
import torch
from safetensors.torch import load_file

from make_exact_fixture import CASES, FIXTURE, generate
from emo_pipeline.models.attention import ProjectionCache, attend
from emo_pipeline.models.audio_attention import AudioAttention, FrameAudio
from emo_pipeline.models.temporal import TemporalModule
from emo_pipeline.portrait import region_masks
from emo_pipeline.tiny import randomize_, tiny_net
from test_models import conditions


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(CASES))
def test_frames_equal_the_original_code(name):
    reference = load_file(FIXTURE)[name]  # written by the code before the speed work (dcd40c4)
    frames = generate(name)
    assert frames.shape == reference.shape
    assert relative(frames, reference) < 1e-4


@torch.no_grad()
@pytest.mark.parametrize("masked", [True, False])
def test_rows_without_audio_get_what_zero_tokens_give(masked):
    torch.manual_seed(0)
    module = randomize_(AudioAttention(16, 16, 4, 8, 4, masked), 1, scale=0.2)
    for p in module.parameters():  # the output biases matter here: make them clearly non-zero
        p.add_(0.05)
    x = torch.randn(6, 16, 4, 4)
    tokens = torch.randn(6, 3, 8)
    tokens[:3] = 0  # rows 0-2 silent
    masks = region_masks((0.2, 0.2, 0.8, 0.8), (0.4, 0.6, 0.6, 0.7), 4, levels=1)[0]
    generic = module(x, FrameAudio(tokens), masks, (1.0, 0.7, 1.3))
    fast = module(x, FrameAudio(tokens, heard=(False,) * 3 + (True,) * 3, cache=ProjectionCache()), masks,
                  (1.0, 0.7, 1.3))
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-5)
    assert (generic[:3] - x[:3]).abs().max() > 1e-2  # the constant is not nothing


@torch.no_grad()
def test_temporal_module_leaves_out_motion_frames_exactly():
    torch.manual_seed(0)
    module = randomize_(TemporalModule(16, 4, 32, 4, speed_dim=8), 2, scale=0.2)
    n, f = 2, 5
    x = torch.randn(2 * (n + f), 16, 3, 3)
    speed = torch.randn(2, f, 8)
    # the full computation over all n + f frames, then the clip frames picked out
    full = module.temporal_transformer
    h = full.norm(x).view(2, n + f, 16, 9).permute(0, 3, 1, 2).reshape(18, n + f, 16)
    h = full.proj_in(h)
    block = full.transformer_blocks[0]
    for attention, norm in zip(block.attention_blocks, block.norms):
        h = h + attention(norm(h))
    speed_rows = speed.repeat_interleave(9, dim=0)
    h = h + attend(block.speed_attention, block.speed_norm(h), speed_rows)  # every frame asks (as before)
    h = h + block.ff(block.ff_norm(h))
    h = full.proj_out(h).view(2, 9, n + f, 16).permute(0, 2, 3, 1).reshape(2 * (n + f), 16, 3, 3) + x
    expected = h.view(2, n + f, 16, 3, 3)[:, n:].reshape(2 * f, 16, 3, 3)
    torch.testing.assert_close(module(x, n + f, speed, drop=n, cache=ProjectionCache()), expected,
                               rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_items_run_alone_equal_their_rows_of_the_batch():
    net = tiny_net()
    x, cond, _ = conditions(net)
    cond.audio_heard = (False, True)
    batched = net.denoising_unet(x, torch.tensor(300), cond)
    for item in range(2):
        alone = net.denoising_unet(x[item:item + 1], torch.tensor(300), cond.select([item]))
        torch.testing.assert_close(alone, batched[item:item + 1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_projection_cache_reuses_the_first_projection():
    torch.manual_seed(0)
    from emo_pipeline.models.attention import make_attention

    attn = make_attention(8, 2, 4)
    cache = ProjectionCache()
    tokens = torch.randn(3, 5, 4)
    k1, v1 = cache.key_value(attn, tokens)
    k2, _ = cache.key_value(attn, tokens)
    assert k2 is k1 and v1.shape == (3, 5, 8)
    with torch.enable_grad():  # training: never cached (gradient checkpointing recomputes)
        k3, _ = cache.key_value(attn, tokens)
    assert k3 is not k1
