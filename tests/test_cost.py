"""FLOP accounting: the per-stage counts combined by the step plan equal a count of a real run."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import speech_like
from emo_pipeline.config import tiny_config, tiny_emo_config
from emo_pipeline.cost import full_size_pipeline, video_flops
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.presets import PRESETS, resolve_options, step_plan
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components


def counted_run(pipe: EMOPipeline, options: SamplingOptions, seconds: float) -> int:
    portrait = pipe.prepare_portrait(torch.full((64, 64, 3), 0.5), face_box=(0.3, 0.25, 0.7, 0.75))
    counter = FlopCounterMode(display=False)
    with counter:
        audio = pipe.encode_audio(speech_like(seconds), 16000)
        pipe.generate(portrait, audio, options)
    return counter.get_total_flops()


@pytest.mark.parametrize("config,options", [
    (tiny_config(), SamplingOptions(steps=3)),
    (tiny_config(), SamplingOptions(steps=6, guidance_interval=(0.0, 0.5), cache_interval=2, scheduler="unipc")),
    (tiny_emo_config(), SamplingOptions(steps=4, cache_interval=3)),
])
def test_video_flops_equal_a_counted_run(config, options):
    pipe = EMOPipeline(*tiny_components(config))
    seconds = 0.5  # 13 frames: 4 clips of 4, the last padded
    predicted = video_flops(pipe, options, seconds)
    assert (predicted.frames, predicted.clips) == (13, 4)
    assert predicted.total == counted_run(pipe, options, seconds)


def test_low_vram_rows_one_by_one_cost_what_the_batch_costs():
    pipe = EMOPipeline(*tiny_components())
    batched = video_flops(pipe, SamplingOptions(steps=2), 0.3)
    pipe.low_vram = True
    one_by_one = video_flops(pipe, SamplingOptions(steps=2), 0.3)
    assert one_by_one.total == counted_run(pipe, SamplingOptions(steps=2), 0.3)
    # only the time embedding's projections run once per row group instead of once per step
    assert 0 < one_by_one.total - batched.total < 1e-3 * batched.total


def test_step_plan():
    plan = step_plan(8, True, (0.0, 0.5), 3)
    assert [g for g, _ in plan] == [True] * 4 + [False] * 4
    assert [r for _, r in plan] == [False, True, True, False, True, True, False, True]
    assert all(not g for g, _ in step_plan(4, False, (0.0, 1.0), 1))  # no guidance at cfg 1
    assert all(g for g, _ in step_plan(5, True, (0.0, 1.0), 1))


def test_full_size_fast_preset_costs_under_a_third_of_hallos_sampling():
    from emo_pipeline.config import hallo_config

    pipe = full_size_pipeline(hallo_config())  # meta tensors: nothing is computed
    quality = video_flops(pipe, SamplingOptions(preset="quality"), 4.0)
    fast = video_flops(pipe, SamplingOptions(preset="fast"), 4.0)
    # quality is the model's own sampling: for Hallo, 40 DDIM steps
    assert PRESETS["quality"].steps is None and PRESETS["quality"].scheduler is None
    own = resolve_options(SamplingOptions(preset="quality"), hallo_config())
    assert (own.steps, own.scheduler) == (40, "ddim")
    assert fast.total < quality.total / 3
    # the exact path: the denoiser is almost all of it, guided on all 40 steps
    assert quality.stages["denoiser, unconditional rows"] > 0.4 * quality.total
    pipe.low_vram = True  # counted on meta too (flops.py's low-VRAM row)
    low = video_flops(pipe, SamplingOptions(preset="quality"), 4.0)
    assert quality.total <= low.total < 1.001 * quality.total
