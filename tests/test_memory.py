"""Memory accounting: the allocation tracker against known sizes, fake tensors against a real run,
and the full-size modes against each other (all counted, never timed)."""

import torch

from emo_pipeline.config import hallo_config, tiny_config
from emo_pipeline.cost import ActivationTracker, clip_memory, module_bytes
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components


def test_tracker_counts_live_tensors_once_and_frees_them():
    lin1, lin2 = torch.nn.Linear(100, 400), torch.nn.Linear(400, 100)
    x = torch.randn(64, 100)
    tracker = ActivationTracker()
    with tracker, torch.no_grad():
        h = lin1(x)  # 64*400*4 bytes
        g = torch.nn.functional.gelu(h)  # another as large
        view = g.view(-1)  # a view: nothing new
        del h
        y = lin2(g)  # 64*100*4
        del g, view
    assert tracker.peak == 2 * 64 * 400 * 4
    assert tracker.live == y.numel() * 4  # weights were never counted


def test_fake_copy_measures_what_a_real_run_allocates():
    """clip_memory on fake tensors gives the bytes the same steps allocate for real."""
    from emo_pipeline.cost import _probe_portrait
    from emo_pipeline.models.deep_cache import DeepFeatureCache
    from emo_pipeline.sampling.denoiser import Denoiser
    from emo_pipeline.sampling.motion_frames import MotionFrameConditions
    from emo_pipeline.sampling.presets import resolve_options

    pipe = EMOPipeline(*tiny_components(tiny_config()))
    options = SamplingOptions(steps=2)
    fake = clip_memory(pipe, options)
    opts = resolve_options(options, pipe.config)
    probe = _probe_portrait(pipe.config)
    tracker = ActivationTracker()
    with tracker, torch.no_grad():
        audio = pipe.encode_speech(torch.zeros(round(16000 * 4 / 25)), 25.0, 4)
        portrait = probe.to("cpu", torch.float32)
        ref_latent = pipe.encode_images(portrait.pixels[None])
        conditions = MotionFrameConditions(pipe, portrait, ref_latent, opts, True)
        previous = torch.zeros(2, 64, 64, 3)
        baseline = tracker.live
        tracker.reset()
        cond = conditions(audio, 1, previous, torch.Generator().manual_seed(0))
        reference = tracker.peak - baseline
        denoise = Denoiser(pipe.net.denoising_unet, cond, True, 2.0, False, None)
        del cond
        latents = torch.zeros(1, 4, 4, 8, 8)
        t = torch.tensor(500)
        resident = tracker.live
        tracker.reset()
        denoise(latents, t, True, False)
        step = tracker.peak - resident
    assert fake.reference_net - fake.baseline == reference > 0
    assert fake.denoising - fake.resident == step > 0
    assert fake.weights == module_bytes(pipe.net, pipe.vae, pipe.audio_encoder.model)


def test_full_size_modes():
    G = 2**30
    default = clip_memory(hallo_config(), SamplingOptions())
    low = clip_memory(hallo_config(), SamplingOptions(), low_vram=True)
    fp8 = clip_memory(hallo_config(), SamplingOptions(), low_vram=True, fp8_weights=True)
    # fp16 weights: network (2.42 B parameters) + VAE (84 M) in fp16, wav2vec2-base (95 M) in fp32
    assert 4.9 * G < default.weights < 5.1 * G
    assert fp8.weights < 0.56 * default.weights  # linear and conv weights in one byte
    # one item at a time and one frame per VAE decode: lower peaks, same weights
    assert low.denoising < 0.6 * default.denoising and low.vae_decode * 8 == default.vae_decode
    wav2vec = 94_371_712 * 4  # wav2vec2-base in fp32 (parameters and buffers): on the CPU in low-VRAM mode
    assert low.weights == default.weights - wav2vec and fp8.activations == low.activations
