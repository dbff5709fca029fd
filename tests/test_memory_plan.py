"""memory_mode auto: the fastest mode whose counted peak fits the free memory, and why."""

import pytest
import torch

from emo_pipeline.config import hallo_config, tiny_config
from emo_pipeline.cost import clip_memory
from emo_pipeline.memory_plan import counted_peak, needed, plan_memory
from emo_pipeline.sampling.steps import SamplingOptions


@pytest.fixture(scope="module")
def hallo_peaks():
    """The counted peaks of full-size Hallo in fp16 (counted on fake tensors: about a minute on a small CPU)."""
    options = SamplingOptions()
    return {mode: counted_peak(hallo_config(), options, torch.float16, mode, 8)
            for mode in ("normal", "low_vram", "low_vram_fp8")}


def test_the_counted_peak_is_the_cost_model_s(hallo_peaks):
    assert hallo_peaks["normal"] == clip_memory(hallo_config(), SamplingOptions()).total
    assert hallo_peaks["low_vram_fp8"] == clip_memory(hallo_config(), SamplingOptions(), low_vram=True,
                                                      fp8_weights=True).total
    assert hallo_peaks["normal"] > hallo_peaks["low_vram"] > hallo_peaks["low_vram_fp8"]


@pytest.mark.parametrize("mode", ["normal", "low_vram", "low_vram_fp8"])
def test_auto_picks_each_mode_for_a_free_memory_that_fits_just_it(mode, hallo_peaks):
    free = needed(hallo_peaks[mode])  # exactly enough for this mode (and so too little for the faster ones)
    plan = plan_memory(hallo_config(), free, torch.float16)
    assert plan.mode == mode and plan.counted == hallo_peaks[mode]
    assert plan.low_vram == (mode != "normal") and plan.fp8_weights == (mode == "low_vram_fp8")
    assert plan.reason.startswith("auto: ") and "fits in" in plan.reason and f"{free / 2**30:.1f} GiB free" in plan.reason
    if mode != "normal":  # it says why the faster modes were not taken (normal at its smallest decode chunk)
        smallest = counted_peak(hallo_config(), SamplingOptions(), torch.float16, "normal", 1)
        assert f"normal needs {needed(smallest) / 2**30:.1f} GiB" in plan.reason
    plan = plan_memory(hallo_config(), free - 1, torch.float16)  # a byte less: a slower mode or a smaller chunk
    assert (plan.mode, plan.decode_chunk) != (mode, 8 if mode == "normal" else 1) or mode == "low_vram_fp8"


def test_too_little_memory_takes_the_smallest_mode_and_says_it_may_not_fit(hallo_peaks):
    plan = plan_memory(hallo_config(), 2**30, torch.float16)
    assert plan.mode == "low_vram_fp8" and "may run out of memory" in plan.reason


def test_a_smaller_decode_chunk_is_taken_before_low_vram(hallo_peaks):
    options = SamplingOptions()
    chunk_4 = counted_peak(hallo_config(), options, torch.float16, "normal", 4)
    assert hallo_peaks["low_vram"] < chunk_4 < hallo_peaks["normal"]  # at 8 frames the VAE decode is the peak
    plan = plan_memory(hallo_config(), needed(chunk_4), torch.float16)
    assert (plan.mode, plan.decode_chunk) == ("normal", 4) and "VAE decode 4 frames at a time" in plan.reason


def test_a_small_model_is_not_counted():
    plan = plan_memory(tiny_config(), 16 * 2**30, torch.float32)
    assert plan.mode == "normal" and "under a tenth" in plan.reason and plan.counted == 0


def test_load_emo_model_auto_follows_the_free_memory_comfyui_reports(tmp_path):
    import comfy_stubs
    from emo_pipeline.tiny import write_tiny_model_folder

    write_tiny_model_folder(tmp_path / "models" / "emo")
    state = comfy_stubs.install(tmp_path / "models", tmp_path / "out")
    loader = comfy_stubs.load_pack().NODE_CLASS_MAPPINGS["LoadEMOModel"]()
    state.free_memory = 16 * 2**30
    model = loader.load("tiny/net.safetensors", "auto", "auto", memory_mode="auto")[0]
    assert not model.pipeline.low_vram and model.plan.mode == "normal"
    state.free_memory = 100 * 2**20  # too little even for the smallest mode of this model
    model = loader.load("tiny/net.safetensors", "auto", "auto", memory_mode="auto")[0]
    assert model.pipeline.low_vram and model.plan.fp8_weights and "may run out of memory" in model.plan.reason
    assert any(type(m).__name__.startswith("Fp8") for m in model.pipeline.net.modules())  # weights stored in fp8
