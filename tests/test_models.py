"""Model-level behaviour that Hallo's weights depend on."""

import torch

from emo_pipeline.config import tiny_config
from emo_pipeline.models import BackboneConditions
from emo_pipeline.models.audio_attention import _pointwise
from emo_pipeline.portrait import region_masks
from emo_pipeline.tiny import tiny_net


def conditions(net, batch=2, frames=3, motion=2, seed=0, tile=True, use_reference=(False, True)):
    gen = torch.Generator().manual_seed(seed)
    cfg = net.config
    latents = torch.randn(batch * (1 + motion), 4, 8, 8, generator=gen)
    identity = torch.randn(batch, cfg.identity_tokens, cfg.cross_attention_dim, generator=gen)
    features = net.reference_unet(latents, identity.repeat(1 + motion, 1, 1))
    reference, motion_features = net.denoising_unet.prepare_reference(
        features, batch, frames, torch.tensor(use_reference), tile)
    audio = torch.randn(batch, frames, cfg.audio_tokens, cfg.audio_attention_dim, generator=gen)
    cond = BackboneConditions(identity=identity, audio=audio, reference=reference, motion=motion_features,
                              masks=region_masks((0.2, 0.2, 0.8, 0.8), (0.4, 0.6, 0.6, 0.7), 8))
    x = torch.randn(batch, 4, frames, 8, 8, generator=gen)
    return x, cond, features


@torch.no_grad()
def test_reference_rows_tiled_as_hallo_or_per_item():
    net = tiny_net()
    _, cond, features = conditions(net, use_reference=(True, True))
    _, cond_items, _ = conditions(net, use_reference=(True, True), tile=False)
    attn1 = net.denoising_unet.spatial_transformers()[0].block.attn1
    portrait_rows = features[0].view(2, 3, 8, 8, -1)[:, 0].flatten(1, 2)  # items' portrait tokens
    keys = attn1.to_k(portrait_rows)
    # one key set per item, projected once
    torch.testing.assert_close(cond.reference[0].key, keys)
    for row in range(6):  # rows are (item, frame) pairs: item = row // 3
        assert cond.reference[0].sources[row] == row % 2  # Hallo: tiled
        assert cond_items.reference[0].sources[row] == row // 3  # per item
    # and the Backbone reads them so: per-item sources equal the tiled ones with keys swapped
    # where they differ (rows 1 and 4 of [0 1 0 | 1 0 1] vs [0 0 0 | 1 1 1])
    x = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    out_items = net.denoising_unet(x, torch.tensor(500), cond_items)
    swapped = conditions(net, use_reference=(True, True))[1]
    swapped.reference = [type(r)(r.key, r.value, (0, 0, 0, 1, 1, 1)) for r in swapped.reference]
    torch.testing.assert_close(net.denoising_unet(x, torch.tensor(500), swapped), out_items)
    assert (net.denoising_unet(x, torch.tensor(500), cond) - out_items).abs().max() > 1e-4


@torch.no_grad()
def test_unconditional_rows_do_not_see_the_reference():
    net = tiny_net()
    x, cond, _ = conditions(net)
    out = net.denoising_unet(x, torch.tensor(500), cond)
    for ref in cond.reference:
        ref.key.mul_(3.0)  # any change to the portrait's keys
    out2 = net.denoising_unet(x, torch.tensor(500), cond)
    assert torch.equal(out[0], out2[0])  # uncond row: plain self-attention
    assert (out[1] - out2[1]).abs().max() > 1e-4


@torch.no_grad()
def test_lowest_resolution_temporal_modules_run_only_when_configured():
    for run_lowres in (False, True):
        net = tiny_net(tiny_config(run_lowres_temporal=run_lowres))
        x, cond, _ = conditions(net)
        out = net.denoising_unet(x, torch.tensor(10), cond)
        for block in (net.denoising_unet.down_blocks[3], net.denoising_unet.up_blocks[0]):
            for module in block.motion_modules:
                module.temporal_transformer.proj_out.bias.add_(1.0)
        changed = (net.denoising_unet(x, torch.tensor(10), cond) - out).abs().max() > 1e-4
        assert changed == run_lowres


@torch.no_grad()
def test_motion_features_reach_the_output_through_temporal_modules():
    net = tiny_net()
    x, cond, _ = conditions(net)
    out = net.denoising_unet(x, torch.tensor(10), cond)
    cond.motion = [m * 0 if m is not None else None for m in cond.motion]
    assert (net.denoising_unet(x, torch.tensor(10), cond) - out).abs().max() > 1e-4


def test_pointwise_conv_on_tokens_equals_conv_on_the_grid():
    conv = torch.nn.Conv2d(6, 6, 1)
    grid = torch.randn(2, 6, 4, 5)
    tokens = grid.permute(0, 2, 3, 1).reshape(2, 20, 6)
    expected = conv(grid).permute(0, 2, 3, 1).reshape(2, 20, 6)
    torch.testing.assert_close(_pointwise(conv, tokens), expected)


def test_speed_encoder_buckets():
    from emo_pipeline.models.speed_encoder import speed_buckets

    centers, radii = torch.tensor([-0.1, 0.0, 0.1]), torch.tensor([0.05, 0.05, 0.05])
    s = speed_buckets(torch.tensor([0.0, 0.1]), centers, radii)
    expected = torch.tanh((torch.tensor([[0.0], [0.1]]) - centers) / radii * 3)
    torch.testing.assert_close(s, expected)
    assert s[0, 1] == 0 and s[1, 2] == 0  # zero at the bucket holding the speed
