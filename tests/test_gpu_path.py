"""The CUDA path, checked on a CPU: each family in its GPU precision (Hallo and EchoMimic fp16, MEMO bf16) against
fp32, finite everywhere, every tensor entering its module in that module's dtype; and no operation of the sampling
loop mixing devices (run with the models on the meta device: a tensor made on the CPU inside the loop would meet
the model's there, as it would meet a GPU's)."""

from __future__ import annotations

import collections
import logging
import shutil
from contextlib import contextmanager

import pytest
import torch
from conftest import dynamo_record, speech_like
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from emo_pipeline.config import tiny_config, tiny_echomimic_config, tiny_joyhallo_config, tiny_memo_config
from emo_pipeline.models.fp8 import FP8, compute_weight, has_fp8_weights, store_weights_fp8
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.denoiser import Denoiser
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components

FAMILIES = {"hallo": (tiny_config, torch.float16, 0.05), "echomimic": (tiny_echomimic_config, torch.float16, 0.05),
            "memo": (tiny_memo_config, torch.bfloat16, 0.1),
            "joyhallo": (tiny_joyhallo_config, torch.float16, 0.05)}  # tolerance: max abs difference of 0..1 frames


def _inputs(pipe: EMOPipeline):
    gen = torch.Generator().manual_seed(0)
    portrait = pipe.prepare_portrait(torch.rand(96, 96, 3, generator=gen), face_box=(0.25, 0.2, 0.75, 0.8))
    return portrait, pipe.encode_audio(speech_like(0.4), 16000)


class Watch:
    """Forward hooks on every module of the network and the VAE: inputs in a dtype other than the module's own
    weights, and outputs that are not finite."""

    def __init__(self, *modules: torch.nn.Module, compute_dtype: torch.dtype | None = None):
        # compute_dtype: what layers whose weights are stored in fp8 compute in (they up-cast the weight)
        self.compute_dtype = compute_dtype
        self.wrong_dtype, self.not_finite = collections.Counter(), collections.Counter()
        self.handles = []
        for root in modules:
            for m in root.modules():
                self.handles.append(m.register_forward_pre_hook(self._inputs, with_kwargs=True))
                self.handles.append(m.register_forward_hook(self._outputs))

    def _inputs(self, module, args, kwargs):
        weight = next((p for p in module.parameters(recurse=False) if p.is_floating_point()), None)
        expected = None if weight is None else self.compute_dtype if weight.dtype == FP8 else weight.dtype
        for t in tree_flatten((args, kwargs))[0]:
            if expected is not None and isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != expected:
                self.wrong_dtype[(type(module).__name__, t.dtype, expected)] += 1

    def _outputs(self, module, args, output):
        for t in tree_flatten(output)[0]:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                self.not_finite[type(module).__name__] += 1

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_s_gpu_precision_stays_close_to_fp32_and_finite(family):
    make, dtype, tolerance = FAMILIES[family]
    frames = {}
    for precision in (torch.float32, dtype):
        pipe = EMOPipeline(*tiny_components(make()), dtype=precision)
        watch = Watch(pipe.net, pipe.vae)
        frames[precision] = pipe.generate(*_inputs(pipe), SamplingOptions(seed=0, steps=2))
        watch.close()
        assert pipe.net.denoising_unet.conv_in.weight.dtype == precision
        assert dict(watch.wrong_dtype) == {} and dict(watch.not_finite) == {}  # VAE decode included
    assert torch.isfinite(frames[dtype]).all()
    difference = (frames[dtype].float() - frames[torch.float32]).abs().max().item()
    assert 0 < difference < tolerance, difference


@pytest.mark.parametrize("family", FAMILIES)
def test_fp8_weight_storage_in_the_family_s_gpu_precision(family):
    """fp8-stored weights up-cast to the family's GPU precision: finite, every module computing in that precision,
    and within fp8's stated tolerance of fp32 (docs/speed-and-memory.md: mean absolute difference under 0.03 on the tiny models)."""
    make, dtype, _ = FAMILIES[family]
    reference = EMOPipeline(*tiny_components(make()))
    exact = reference.generate(*_inputs(reference), SamplingOptions(seed=0, steps=2))
    pipe = EMOPipeline(*tiny_components(make()), dtype=dtype).store_weights_fp8()
    assert has_fp8_weights(pipe.net) and pipe.net.denoising_unet.conv_in.weight.dtype == FP8
    watch = Watch(pipe.net, pipe.vae, compute_dtype=dtype)
    frames = pipe.generate(*_inputs(pipe), SamplingOptions(seed=0, steps=2))
    watch.close()
    assert dict(watch.wrong_dtype) == {} and dict(watch.not_finite) == {}
    assert frames.shape == exact.shape and torch.isfinite(frames).all()
    assert 0 < (frames - exact).abs().mean().item() < 0.03


def test_fp8_weights_are_rounded_once_in_the_compute_precision():
    """An fp8-stored weight computes as its fp8 value times the float32 scale, rounded once to the compute precision,
    as compiled code fuses it, so eager and compiled runs use the same weights. Rounding the scale first made each
    layer's weights off by one factor (up to 2^-11 in fp16, 2^-9 in bf16), and a scale under fp16's smallest normal
    (a layer whose weights all lie under 0.027) lost most of its bits."""
    gen = torch.Generator().manual_seed(0)
    for largest in (0.5, 0.01):  # scales 1.1e-3 and 2.2e-5 (subnormal in fp16)
        layer = torch.nn.Linear(64, 64)
        with torch.no_grad():
            layer.weight.copy_((torch.rand(64, 64, generator=gen) * 2 - 1) * largest)
        store_weights_fp8(layer)
        for dtype in (torch.float16, torch.bfloat16):
            exact = (layer.weight.float() * layer.weight_scale).to(dtype)
            assert torch.equal(compute_weight(layer, dtype), exact), (largest, dtype)


def test_torch_s_compile_trace_stays_out_of_test_reports(caplog):
    """conftest keeps torch's structured compile trace (thousands of empty DEBUG records per compiled Backbone) out
    of pytest's log capture, whatever lets it reach the root logger; other records are kept."""
    with caplog.at_level(logging.DEBUG):
        for name in ("torch.__trace", "emo_pipeline.compile"):
            logging.getLogger().handle(logging.LogRecord(name, logging.DEBUG, __file__, 0, "", None, None))
    assert [record.name for record in caplog.records] == ["emo_pipeline.compile"]


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")), reason="no C++ compiler for inductor")
def test_compile_in_fp16_with_fp8_weights_matches_fp32():
    """torch.compile (inductor) of the Backbone in Hallo's GPU precision with fp8-stored weights, the lightest GPU
    setting: compiled once for every step of every clip, not fallen back, and within fp16's round-off of the same
    weights computing in fp32. Measured against fp32, not against eager fp16: eager fp16 is itself 0.006-0.0095 off
    (ATen's avx512, avx2 and default kernels; eager avx512 and avx2 differ by 0.014), while compiled code, keeping
    fused intermediates in fp32, is closer. A two-level Backbone (every kind of layer, half the compile time)."""
    make, dtype, _ = FAMILIES["hallo"]
    config = make(block_out_channels=(32, 64))
    exact = EMOPipeline(*tiny_components(config), dtype=dtype).store_weights_fp8().to("cpu", torch.float32)
    expected = exact.generate(*_inputs(exact), SamplingOptions(seed=0, steps=2))
    pipe = EMOPipeline(*tiny_components(config), dtype=dtype, compile=True).store_weights_fp8()
    with dynamo_record() as record:
        frames = pipe.generate(*_inputs(pipe), SamplingOptions(seed=0, steps=2))  # 3 clips of 2 steps
    assert pipe._compiled.error is None and pipe._compiled.compiled is not None
    assert torch.isfinite(frames).all()
    torch.testing.assert_close(frames, expected, rtol=0, atol=1e-2)
    assert record.compiled_once(), vars(record)  # one graph: no recompile, no graph break


class DeviceCheck(TorchDispatchMode):
    """Records every operation whose tensor arguments (0-dim scalars aside, which torch moves itself) lie on more
    than one device. On the meta device values are not known: a value asked for is 0, and a copy to the CPU gives
    zeros of the right shape (shapes and devices are what is checked)."""

    def __init__(self):
        super().__init__()
        self.mixed = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return 0
        if func is torch.ops.aten._to_copy.default and args[0].device.type == "meta" \
                and kwargs.get("device") is not None and torch.device(kwargs["device"]).type != "meta":
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype, device=kwargs["device"])
        devices = {t.device.type for t in tensors if t.dim() > 0}
        if len(devices) > 1:
            self.mixed[(str(func), tuple(sorted(devices)))] += 1
        return func(*args, **kwargs)


@contextmanager
def _setting(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _run_on_meta(make, check: DeviceCheck) -> torch.Tensor:
    pipe = EMOPipeline(*tiny_components(make()))
    portrait, audio = _inputs(pipe)
    pipe.net.to("meta"), pipe.vae.to("meta")
    pipe.device = torch.device("meta")
    import torch.fx.experimental._config as fx_config

    with check, _setting(fx_config, "meta_nonzero_assume_all_nonzero", True):  # diffusers' timestep lookup
        return pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))


@pytest.mark.parametrize("family", FAMILIES)
def test_no_operation_of_the_sampling_loop_mixes_devices(family):
    check = DeviceCheck()
    frames = _run_on_meta(FAMILIES[family][0], check)
    assert frames.shape[0] == 10 if family == "hallo" else frames.shape[0] > 0
    assert dict(check.mixed) == {}


def test_the_device_check_catches_a_tensor_planted_on_the_cpu_in_the_loop(monkeypatch):
    call = Denoiser.__call__

    def planted(self, latents, *args, **kwargs):
        noise = torch.zeros(latents.shape)  # made without the pipeline's device: a GPU run would fail here
        return call(self, latents + noise, *args, **kwargs)

    monkeypatch.setattr(Denoiser, "__call__", planted)
    check = DeviceCheck()
    with pytest.raises(RuntimeError, match="not on the expected device"):  # as a GPU run would fail
        _run_on_meta(tiny_config, check)
    assert any(devices == ("cpu", "meta") and "add" in op for op, devices in check.mixed)
