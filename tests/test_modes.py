"""Fast sampling modes, low-VRAM mode, fp8 weight storage and compile: each runs end to end, and
does what it says (fewer rows, skipped levels, same frames, half the bytes)."""

import logging
import shutil

import pytest
import torch

from conftest import speech_like
from emo_pipeline.config import tiny_config, tiny_echomimic_config, tiny_emo_config, tiny_joyhallo_config
from emo_pipeline.cost import module_bytes
from emo_pipeline.models.attention import attention_score_budget
from emo_pipeline.models.fp8 import FP8, has_fp8_weights
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.presets import PRESETS, resolve_options
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components

FACE = (0.25, 0.2, 0.75, 0.8)


def make(config=None, **kwargs) -> EMOPipeline:
    return EMOPipeline(*tiny_components(config or tiny_config(), seed=1), **kwargs)


def run(pipe: EMOPipeline, seconds: float = 0.4, **options) -> torch.Tensor:
    portrait = pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)), face_box=FACE)
    audio = pipe.encode_audio(speech_like(seconds, seed=2), 16000)
    return pipe.generate(portrait, audio, SamplingOptions(seed=5, guidance_scale=2.0, **options))


class BatchRecorder:
    """Records the batch size and whether the mid block ran, per Backbone call."""

    def __init__(self, pipe: EMOPipeline) -> None:
        self.calls, self.mid = [], 0
        unet = pipe.net.denoising_unet
        unet.register_forward_pre_hook(lambda m, args: self.calls.append(args[0].shape[0]))
        unet.mid_block.register_forward_pre_hook(lambda m, args: setattr(self, "mid", self.mid + 1))


@pytest.mark.parametrize("options", [
    dict(preset="balanced"), dict(preset="fast"), dict(preset="quality", steps=3),
    dict(steps=4, guidance_interval=(0.0, 0.5)), dict(steps=5, cache_interval=2), dict(steps=4, scheduler="unipc"),
])
def test_fast_modes_give_one_frame_per_audio_frame(options):
    pipe = make()
    frames = run(pipe, 0.5, **options)  # 13 frames, 4 clips
    assert frames.shape == (13, 64, 64, 3) and torch.isfinite(frames).all()


def test_guidance_interval_runs_only_the_conditional_rows_after_it():
    pipe = make()
    record = BatchRecorder(pipe)
    run(pipe, 0.16, steps=4, guidance_interval=(0.0, 0.5))  # one clip
    assert record.calls == [2, 2, 1, 1]
    assert (run(make(), 0.16, steps=4, guidance_interval=(0.0, 0.5)) - run(make(), 0.16, steps=4)).abs().max() > 1e-4


def test_deep_cache_skips_the_lower_levels_between_full_steps():
    pipe = make()
    record = BatchRecorder(pipe)
    run(pipe, 0.16, steps=5, cache_interval=2)
    assert len(record.calls) == 5 and record.mid == 3  # full passes at steps 0, 2, 4
    off = run(make(), 0.16, steps=5, cache_interval=1)
    on = run(make(), 0.16, steps=5, cache_interval=2)
    assert torch.equal(run(make(), 0.16, steps=5), off)
    assert (on - off).abs().max() > 1e-4  # it is an approximation, not the exact path


def test_presets_fill_only_what_is_not_set():
    cfg = tiny_config()
    fast = resolve_options(SamplingOptions(preset="fast"), cfg)
    assert (fast.steps, fast.scheduler, fast.guidance_interval, fast.cache_interval) == (
        PRESETS["fast"].steps, "unipc", PRESETS["fast"].guidance_interval, PRESETS["fast"].cache_interval)
    mine = resolve_options(SamplingOptions(preset="fast", steps=7, cache_interval=1), cfg)
    assert (mine.steps, mine.cache_interval, mine.scheduler) == (7, 1, "unipc")
    exact = resolve_options(SamplingOptions(), cfg)
    assert (exact.steps, exact.scheduler, exact.guidance_interval, exact.cache_interval) == (cfg.steps, "ddim", (0.0, 1.0), 1)
    for bad, words in [(dict(preset="turbo"), "Unknown preset 'turbo'"), (dict(guidance_interval=(0.6, 0.2)), "guidance_interval"),
                       (dict(cache_interval=0), "cache_interval"), (dict(scheduler="lms"), "Unknown scheduler 'lms'")]:
        with pytest.raises(ValueError, match=words):
            resolve_options(SamplingOptions(**bad), cfg)


@pytest.mark.parametrize("config", [tiny_config(), tiny_emo_config(), tiny_echomimic_config(), tiny_joyhallo_config()],
                         ids=["hallo-shaped", "emo", "echomimic", "joyhallo"])
def test_low_vram_gives_the_batched_frames(config):
    batched = run(make(config), 0.4, steps=3, context_overlap=1)
    low = make(config, low_vram=True)
    record = BatchRecorder(low)
    frames = run(low, 0.4, steps=3, context_overlap=1)
    assert set(record.calls) == {1}  # every Backbone call holds one item
    torch.testing.assert_close(frames, batched, rtol=0, atol=1e-3)  # fp16 round-off (2^-10); fp32 here


def test_attention_budget_splits_calls_without_changing_them():
    from emo_pipeline.models.attention import _sdpa

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 40, 8, generator=gen) for _ in range(3))
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        whole = _sdpa(q, k, v)
        with attention_score_budget(2 * 10 * 40):  # at most 800 scores per call: 10 queries of one row
            pieces = _sdpa(q, k, v)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    assert len(calls) == 1 + 3 * 4 and all(s[0] * s[1] * s[2] * 40 <= 800 for s in calls[1:])
    torch.testing.assert_close(pieces, whole)


def test_fp8_weights_load_run_and_stay_close_to_fp16(tmp_path):
    from emo_pipeline.components import load_pipeline
    from emo_pipeline.tiny import write_tiny_model_folder

    path = write_tiny_model_folder(tmp_path, seed=1)
    fp16 = load_pipeline(path, dtype=torch.float16)
    fp8 = load_pipeline(path, dtype=torch.float16, fp8_weights=True)
    assert has_fp8_weights(fp8.net) and fp8.net.denoising_unet.conv_in.weight.dtype == FP8
    assert fp8.net.denoising_unet.conv_in.bias.dtype == torch.float16  # biases and norms keep fp16
    linear_conv = sum(m.weight.numel() for m in fp16.net.modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d))
    assert module_bytes(fp16.net) - module_bytes(fp8.net) == linear_conv - 4 * sum(
        1 for m in fp8.net.modules() if hasattr(m, "weight_scale"))  # one byte per weight saved, a float32 scale added
    a, b = run(fp16, 0.4, steps=3).float(), run(fp8, 0.4, steps=3).float()
    assert b.shape == (10, 64, 64, 3) and torch.isfinite(b).all()
    # Stated tolerance (docs/speed-and-memory.md): mean absolute difference under 0.03 of the 0..1 range on this
    # random tiny model; the trained demo model is measured by benchmarks/fidelity.py.
    assert (a - b).abs().mean() < 0.03
    fp8.to("cpu", torch.float32)  # moving keeps the fp8 storage
    assert fp8.net.denoising_unet.conv_in.weight.dtype == FP8


# The compile tests' Backbone: two levels (every kind of layer: reference, audio and temporal attention, an
# attention-free lowest level, mid block), half the graph of tiny_config's four, so half inductor's compile time.
COMPILE_CONFIG = dict(block_out_channels=(32, 64))


@pytest.fixture(scope="module")
def eager_clip() -> torch.Tensor:
    """One clip of two steps from the compile tests' Backbone, without compiling: what they compare with."""
    return run(make(tiny_config(**COMPILE_CONFIG)), 0.16, steps=2)


def test_compile_equals_eager_or_falls_back(monkeypatch, caplog, eager_clip):
    def broken(module, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    pipe = make(tiny_config(**COMPILE_CONFIG), compile=True)
    with caplog.at_level(logging.WARNING):
        frames = run(pipe, 0.16, steps=2)
    assert torch.equal(frames, eager_clip)
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in caplog.text
    assert pipe._compiled.error is not None


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")), reason="no C++ compiler for inductor")
def test_compile_equals_eager(eager_clip):
    """The real compiler (inductor; a minute or two on a 2-core CPU): one compiled graph serves every step of both
    runs (a clip's key/value cache, filled at its first step, does not make a second one)."""
    from conftest import dynamo_record

    pipe = make(tiny_config(**COMPILE_CONFIG), compile=True)
    with dynamo_record() as record:
        frames = run(pipe, 0.16, steps=2)
        assert pipe._compiled.error is None and pipe._compiled.compiled is not None
        torch.testing.assert_close(frames, eager_clip, rtol=0, atol=1e-4)
        again = run(pipe, 0.16, steps=2)  # the compiled graph is reused: same result
        torch.testing.assert_close(again, frames, rtol=0, atol=1e-6)
    assert record.compiled_once(), vars(record)  # compiled once: no recompile, no graph break
