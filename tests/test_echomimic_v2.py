"""EchoMimic v2 on tiny random weights: its family record, its four-file download read with strict keys, and its
sampling loop driven by a hand-pose sequence of any length (drawn and encoded window by window)."""

from __future__ import annotations

import pytest
import torch
from conftest import speech_like
from einops import rearrange
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from emo_pipeline.config import echomimic_config, echomimic_v2_config, tiny_echomimic_v2_config
from emo_pipeline.io.loading import expected_shapes, network_config, open_network
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.poses.draw import draw_hands
from emo_pipeline.poses.sequence import PoseError, PoseSequence
from emo_pipeline.sampling.context_windows import context_windows, shifted
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components, write_tiny_echomimic_folder


def waving_hands(frames: int, size: int = 64, seed: int = 0) -> PoseSequence:
    """Two hands that move a little every frame (so every frame's pose image differs), placed in size² frames."""
    gen = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(2, 21, 2, generator=gen)
    drift = torch.linspace(0, 0.2, frames).view(frames, 1, 1, 1)
    hands = (base + drift * torch.tensor([1.0, -0.5])).clamp(0.05, 0.95)
    return PoseSequence(hands, torch.full((frames, 2, 21), 0.9), (size, size), (0, size, 0, size), size,
                        24.0, "waving hands")


def test_v2_is_v1_s_network_with_a_three_channel_pose_encoder():
    """Every key of v1 but the face locator's first convolution has the same shape in v2 (its UNets, attention
    and motion modules are v1's, class for class); v2 samples at 768² with windows shifted by 3."""
    v1, v2 = expected_shapes(echomimic_config()), expected_shapes(echomimic_v2_config())
    assert set(v1) == set(v2)
    assert {k for k in v1 if v1[k] != v2[k]} == {"face_locator.conv_in.weight"}
    assert v2["face_locator.conv_in.weight"] == torch.Size([16, 3, 3, 3])
    assert sum(v2[k].numel() for k in v2 if k.startswith("face_locator.")) == 1_086_480
    config = echomimic_v2_config()
    assert (config.sample_size, config.steps, config.guidance_scale, config.fps) == (768, 30, 2.5, 24.0)
    assert (config.spec.context_overlap, config.spec.context_shift, config.spec.noise_clamp) == (3, 3, 1.5)


def test_v2_download_layout_is_read_as_v2_and_v1_s_as_v1(tmp_path):
    v2 = write_tiny_echomimic_folder(tmp_path / "v2", tiny_echomimic_v2_config())
    with open_network(v2) as reader:
        assert reader.family == "echomimic_v2"
        assert reader.shapes["face_locator.conv_in.weight"][1] == 3
    (v2 / "pose_encoder.pth").unlink()
    with pytest.raises(FileNotFoundError, match="pose_encoder"):
        open_network(v2 / "denoising_unet.pth")  # what tells v2 apart is gone: read as v1, which lacks its locator
    with pytest.raises(Exception, match="does not fit the 'echomimic-v2' model"):
        network_config(write_tiny_echomimic_folder(tmp_path / "v2b", tiny_echomimic_v2_config()))  # tiny, not 768²


def test_pose_encoder_per_window_equals_the_whole_video():
    """The encoder works frame by frame, so encoding each window's frames when it runs gives what encoding the
    whole video at once gives (the reference's way, which holds every frame's features)."""
    pipe = EMOPipeline(*tiny_components(tiny_echomimic_v2_config()))
    torch.nn.init.normal_(pipe.net.face_locator.conv_out.weight, std=0.05)  # zero-initialised: make it count
    poses = waving_hands(20)
    whole = pipe.net.face_locator(rearrange(poses.tensor_frames(range(20), draw_hands), "c f h w -> f c h w"))
    for window in context_windows(20, 12, 3):
        frames = shifted(window, 2, 3, 20)
        part = pipe.net.face_locator(rearrange(poses.tensor_frames(frames, draw_hands), "c f h w -> f c h w"))
        torch.testing.assert_close(part, whole[frames], rtol=0, atol=1e-6)
    assert whole.abs().sum() > 0 and not torch.allclose(whole[0], whole[-1])


def _pipe(seed: int = 0) -> EMOPipeline:
    """The tiny v2 pipeline, its pose encoder's last layer (zero-initialised, as trained ones are not) made to
    count as much as a trained one's does."""
    pipe = EMOPipeline(*tiny_components(tiny_echomimic_v2_config(), seed))
    torch.nn.init.normal_(pipe.net.face_locator.conv_out.weight, std=0.5)
    return pipe


def _portrait(pipe: EMOPipeline):
    return pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(1)),
                                 face_box=(0.25, 0.2, 0.75, 0.8))


def test_a_short_pose_sequence_drives_a_long_audio_to_its_end():
    """14 pose frames drive 40 frames of audio: the poses are extended (ping-pong) and the video has one frame per
    audio frame; different poses give a different video (the pose features reach the Backbone)."""
    pipe = _pipe()
    portrait, audio = _portrait(pipe), pipe.encode_audio(speech_like(1.6), 16000)
    n = audio.num_frames
    assert n >= 38  # 1.6 s at 24 fps
    poses, said = waving_hands(14).extend_to(n)
    assert said == f"poses: 14 frames (waving hands) extended to {n} by ping-pong for {n / 24:.1f} s of audio"
    options = dict(seed=0, steps=2, frames_per_clip=12)
    video = pipe.generate(portrait, audio, SamplingOptions(poses=poses, **options))
    assert video.shape == (n, 64, 64, 3) and torch.isfinite(video).all()
    still, _ = waving_hands(1).extend_to(n, "hold")
    other = pipe.generate(portrait, audio, SamplingOptions(poses=still, **options))
    assert (other - video).abs().max() > 1e-3


def test_poses_missing_or_of_the_wrong_length_or_size_are_named():
    pipe = _pipe()
    portrait, audio = _portrait(pipe), pipe.encode_audio(speech_like(0.5), 16000)
    with pytest.raises(PoseError, match="driven by a hand-pose sequence"):
        pipe.generate(portrait, audio, SamplingOptions(steps=1))
    with pytest.raises(PoseError, match=r"has 5 frames for a \d+-frame video: extend it"):
        pipe.generate(portrait, audio, SamplingOptions(steps=1, poses=waving_hands(5)))
    poses = waving_hands(audio.num_frames, size=768)
    with pytest.raises(PoseError, match="placed in 768² frames and this model renders 64²"):
        pipe.generate(portrait, audio, SamplingOptions(steps=1, poses=poses))
    video = pipe.generate(portrait, audio, SamplingOptions(steps=1, poses=poses.for_frame_size(64)))
    assert video.shape[0] == audio.num_frames


def test_video_flops_count_the_pose_encoder_of_every_window_at_every_step():
    """The cost model's FLOPs of a v2 video equal a counted run's, the pose encoder included (each window's frames
    encoded at each step); at 768² the encoder is under 1 % of the Backbone's work."""
    from torch.utils.flop_counter import FlopCounterMode

    from emo_pipeline.config import echomimic_v2_config
    from emo_pipeline.cost import full_size_pipeline, video_flops

    pipe = _pipe()
    options = SamplingOptions(seed=0, steps=2, frames_per_clip=12)
    predicted = video_flops(pipe, options, 1.0)
    portrait, counter = _portrait(pipe), FlopCounterMode(display=False)
    with counter:
        audio = pipe.encode_audio(speech_like(1.0), 16000)
        poses, _ = waving_hands(7).extend_to(audio.num_frames)
        pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2, frames_per_clip=12, poses=poses))
    assert predicted.frames == audio.num_frames and predicted.total == counter.get_total_flops()
    assert predicted.stages["pose encoder"] > 0
    full = video_flops(full_size_pipeline(echomimic_v2_config()), SamplingOptions(), 10.0)
    backbone = full.stages["denoiser, conditional rows"] + full.stages["denoiser, unconditional rows"]
    assert 0 < full.stages["pose encoder"] < 0.01 * backbone


# EchoMimic v2's own network layout: tests/data/echomimic_v2_keys.tsv, written by tests/make_echomimic_keys.py --v2 from
# its module definitions (antgroup/echomimic_v2 at a312dec, built on the meta device as its infer.py builds them).
V2_KEYS = "echomimic_v2_keys.tsv"
V2_PART_NAMES = {"reference_unet": "reference_unet", "denoising_unet": "denoising_unet",
                 "pose_encoder": "face_locator"}  # its pose_encoder.pth is read into the part we call face_locator


def _v2_keys() -> dict[str, tuple[int, ...]]:
    from pathlib import Path

    keys = {}
    for line in (Path(__file__).parent / "data" / V2_KEYS).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        network, key, shape = line.split("\t")
        keys[f"{V2_PART_NAMES[network]}.{key}"] = tuple(int(s) for s in shape.split(",") if s)
    return keys


def test_echomimic_v2_config_matches_every_key_and_shape_of_its_code():
    from emo_pipeline.config import echomimic_v2_acc_config

    reference = _v2_keys()
    for config in (echomimic_v2_config(), echomimic_v2_acc_config()):
        ours = {k: tuple(v) for k, v in expected_shapes(config).items()}
        assert sorted(set(reference) - set(ours)) == []
        assert sorted(set(ours) - set(reference)) == []
        assert {k: v for k, v in ours.items() if reference[k] != v} == {}


def test_echomimic_v2_counts_match_the_header_of_its_key_list():
    """Per network: tensors and values as the header of v2's key list states them."""
    from pathlib import Path

    text = (Path(__file__).parent / "data" / V2_KEYS).read_text()
    header = [l for l in text.splitlines() if l.startswith("# ") and " tensors, " in l and not l.startswith("#  ")]
    ours = expected_shapes(echomimic_v2_config())
    for line in header:
        network = line[2:].split(":")[0]
        tensors = int(line.split(": ")[1].split(" tensors")[0])
        values = int(line.split(" tensors, ")[1].split(" values")[0].replace(",", ""))
        mine = {k: s for k, s in ours.items() if k.startswith(V2_PART_NAMES[network] + ".")}
        assert len(mine) == tensors and sum(torch.Size(s).numel() for s in mine.values()) == values, network
    assert {l[2:].split(":")[0] for l in header} == set(V2_PART_NAMES)


def test_an_fp16_vae_overflow_decodes_in_fp32_and_nan_latents_stop_with_the_cure(caplog):
    """A NaN or an infinity would come out as a black frame (EchoMimic v2's all-black fp16 videos). On the CPU in
    fp16, a VAE whose decoder is scaled to overflow fp16 (as activations grow at 768²) gives infinities; the
    frames are decoded again in fp32 instead, said once, and equal an fp32 decode; latents that are already NaN
    (the network overflowed) stop the render with the precision to use."""
    import logging

    from emo_pipeline.pipeline import NotFiniteError

    pipe = EMOPipeline(*tiny_components(tiny_echomimic_v2_config()), dtype=torch.float16)
    with torch.no_grad():
        pipe.vae.decoder.up_blocks[0].resnets[0].conv2.weight.mul_(1e5)  # fp16 ends at 65,504; the next norm copes
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    assert not torch.isfinite(pipe.vae.decode(latents / 0.18215).sample).all()  # the overflow is real
    exact = EMOPipeline(*tiny_components(tiny_echomimic_v2_config()))
    exact.vae.load_state_dict({k: v.float() for k, v in pipe.vae.state_dict().items()})
    with caplog.at_level(logging.WARNING, logger="emo_pipeline.pipeline"):
        frames = pipe.decode_latents(latents, chunk_size=2)
        again = pipe.decode_latents(latents, chunk_size=2)
    assert torch.isfinite(frames).all() and frames.shape == (3, 64, 64, 3)
    torch.testing.assert_close(frames, exact.decode_latents(latents.float(), chunk_size=2), rtol=0, atol=0)
    torch.testing.assert_close(again, frames, rtol=0, atol=0)
    assert sum("decodes in fp32 from now on" in r.getMessage() for r in caplog.records) == 1
    latents[1, 0, 3, 3] = float("nan")
    with pytest.raises(NotFiniteError, match="overflowed float16 at this size.*--dtype fp32"):
        pipe.decode_latents(latents)


def test_low_vram_encodes_the_poses_frame_by_frame_with_the_same_video():
    """Low-VRAM mode encodes each window's poses one frame at a time (the encoder's peak divided by the window's
    length) and renders what normal mode renders."""
    pipe = _pipe()
    portrait, audio = _portrait(pipe), pipe.encode_audio(speech_like(0.8), 16000)
    poses, _ = waving_hands(5).extend_to(audio.num_frames)
    options = SamplingOptions(seed=0, steps=2, frames_per_clip=12, poses=poses)
    normal = pipe.generate(portrait, audio, options)
    pipe.low_vram = True
    calls = []
    hook = pipe.net.face_locator.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    low = pipe.generate(portrait, audio, options)
    hook.remove()
    windows = context_windows(audio.num_frames, 12, 3)
    assert set(calls) == {1} and len(calls) == 2 * 12 * len(windows)  # every frame of every window, at both steps
    torch.testing.assert_close(low, normal, rtol=0, atol=1e-4)  # low-VRAM also runs guidance's rows one by one


class _FramesOnDevice(TorchDispatchMode):
    """The lengths of the first three dimensions of every 5-D tensor an operation makes on the meta device (the
    stand-in device): video tensors are [batch, channels, frames, h, w] or [batch, frames, channels, h, w]."""

    def __init__(self):
        super().__init__()
        self.lengths: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return 0
        if func is torch.ops.aten._to_copy.default and args[0].device.type == "meta" \
                and kwargs.get("device") is not None and torch.device(kwargs["device"]).type != "meta":
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype, device=kwargs["device"])
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "meta" and t.ndim == 5:
                self.lengths.update(t.shape[:3])
        return out


def _frames_on_device(seconds: float) -> tuple[set[int], int, int]:
    """(the lengths of the video tensors' leading dimensions on the device, the video's frames, the window's) for a
    tiny v2 render of `seconds` whose network and VAE sit on the meta device: what a GPU would hold, without the
    values."""
    import torch.fx.experimental._config as fx_config

    from emo_pipeline.config import tiny_echomimic_v2_config
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.sampling.steps import SamplingOptions as Options
    from emo_pipeline.tiny import tiny_components
    from test_pose_nodes import demo_like

    pipe = EMOPipeline(*tiny_components(tiny_echomimic_v2_config()))
    gen = torch.Generator().manual_seed(0)
    portrait = pipe.prepare_portrait(torch.rand(96, 96, 3, generator=gen))
    audio = pipe.encode_audio(speech_like(seconds), 16000)
    poses = demo_like(10).extend_to(audio.num_frames)[0].for_frame_size(pipe.config.sample_size)
    pipe.net.to("meta"), pipe.vae.to("meta")
    pipe.device = torch.device("meta")
    watch = _FramesOnDevice()
    old = fx_config.meta_nonzero_assume_all_nonzero
    fx_config.meta_nonzero_assume_all_nonzero = True  # diffusers' timestep lookup
    try:
        with watch:
            pipe.generate(portrait, audio, Options(seed=0, steps=2, poses=poses))
    finally:
        fx_config.meta_nonzero_assume_all_nonzero = old
    return watch.lengths, audio.num_frames, pipe.config.frames_per_clip


def test_the_device_holds_one_windows_work_whatever_the_videos_length():
    """The whole video's latents, their prediction sum and the scheduler's step over them stay in host memory; the
    device (here the meta device, standing in for a GPU) only ever holds one window's latents, features and
    activations, and the VAE's chunk: no tensor on it spans the video's frames, and its tensors are of the same
    sizes for a render 4× longer. (Before, the
    whole video's latents lived on the device, four to nine copies of them: at 768², 3.9-8.8 GiB more for 10
    minutes than for 10 seconds.) And the counted peak, which is a window's, is the same for any length in every
    memory mode (memory_plan.counted_peak takes no length)."""
    short, frames_short, window = _frames_on_device(1.05)
    long, frames_long, _ = _frames_on_device(4.2)
    assert (frames_short, frames_long) == (26, 101) and window in short  # more than two windows each
    assert frames_short not in short and frames_long not in long  # no tensor on the device spans the video
    assert long == short


def test_counted_memory_of_v2_at_768_counts_the_windows_poses():
    """At 768² the window's poses weigh in: the encoder's peak and the features the Backbone reads are counted in
    the denoising stage, in place of v1's one face-locator map; low-VRAM mode needs less."""
    from emo_pipeline.config import echomimic_config, echomimic_v2_config
    from emo_pipeline.cost import clip_memory

    options = SamplingOptions()
    config = echomimic_v2_config()
    v2 = clip_memory(config, options)
    v1_at_768 = clip_memory(echomimic_config().with_overrides(sample_size=768), options)
    features = 2 * 320 * 12 * 96 * 96 * 2  # both rows' pose features of a 12-frame window, fp16
    face_map = 2 * 320 * 96 * 96 * 2  # v1's face-locator map, one for all frames
    assert v2.denoising - v1_at_768.denoising == features - face_map
    low = clip_memory(config, options, low_vram=True)
    assert low.denoising < v2.denoising


def test_a_14_second_pose_sequence_drives_40_seconds_of_audio_to_40_seconds_of_video(tmp_path):
    """EchoMimic v2's own scripts stop where the pose sequence ends; here a 14-s sequence (336 frames at 24 fps,
    as its demo 01) read from pose files drives 40 s of audio to 40 s of video, one frame per audio frame, the
    extension said in one line (tiny model, one step without guidance in 24-frame windows)."""
    from emo_pipeline.poses.demo_files import load_pose_folder, save_pose_folder

    save_pose_folder(waving_hands(336, size=768), tmp_path / "01")
    poses = load_pose_folder(tmp_path / "01", source="demo 01")
    pipe = _pipe()
    audio = pipe.encode_audio(speech_like(40.0), 16000)
    assert audio.num_frames == 960
    extended, said = poses.extend_to(audio.num_frames)
    assert said == "poses: 336 frames (demo 01) extended to 960 by ping-pong for 40.0 s of audio"
    frames = 0
    options = SamplingOptions(seed=0, steps=1, guidance_scale=1.0, frames_per_clip=24,  # the fewest calls
                              poses=extended.for_frame_size(64))
    for chunk in pipe.iter_clips(_portrait(pipe), audio, options):
        assert torch.isfinite(chunk).all()
        frames += len(chunk)
    assert frames == 960


RSS_SIZE = 256  # frame side of the RSS test's renders: a 256² uint8 frame is 192 KiB, its latents 4 KiB per copy
RSS_MARGIN_MIB = 4  # run-to-run noise of the growth: within ±1 MiB in 3 pairs of runs (2.5 s and 10 s)


def _render_rss(seconds: float, workdir) -> dict:
    """tests/render_v2_memory.py in a fresh process: the growth of its resident memory from just before sampling
    (model loaded, audio encoded, poses read) to its peak, to the end of the render (the MP4 closed)."""
    import json
    import os
    import sys

    from conftest import ROOT, run_child

    # glibc's dynamic mmap threshold lets freed temporaries stay in a growing heap (see test_long_audio.py)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = run_child([sys.executable, str(ROOT / "tests" / "render_v2_memory.py"), str(seconds), str(workdir),
                        str(RSS_SIZE)], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"),
                    reason="peak memory is read from Linux's /proc")
def test_a_4x_longer_v2_render_peaks_in_rss_only_its_latents_higher(tmp_path):
    """The command line's v2 render (tiny model at 256², poses from demo-format files extended to the audio) in a fresh
    process for 2 s and for 8 s of audio: the longer one's resident peak exceeds the shorter one's by no more than
    what grows with the length by design: the whole video's latents, which context-window sampling denoises together
    (the counted model's 4 copies, fp32 on the CPU), the audio (its waveform, twice: read and muxed), and the noise.
    The decoded frames are written to the MP4 as they come: held, the 144 more frames would add 27 MiB in uint8
    (108 MiB as the decoder's float32), twice the bound."""
    from emo_pipeline.config import tiny_echomimic_v2_config
    from emo_pipeline.cost import host_latent_bytes
    from emo_pipeline.io.media import read_video_info

    short, long = _render_rss(2.0, tmp_path / "short"), _render_rss(8.0, tmp_path / "long")
    frames = {2.0: 48, 8.0: 192}
    more = frames[8.0] - frames[2.0]
    config = tiny_echomimic_v2_config(sample_size=RSS_SIZE)
    latents = (host_latent_bytes(config, frames[8.0], torch.float32)
               - host_latent_bytes(config, frames[2.0], torch.float32))
    audio = 2 * (8.0 - 2.0) * 16000 * 4
    bound_mib = (latents + audio) / 2**20 + RSS_MARGIN_MIB
    held_mib = more * RSS_SIZE * RSS_SIZE * 3 / 2**20  # the extra frames, were the video held as uint8
    assert bound_mib < 0.55 * held_mib  # the bound could not hide a held video
    assert long["growth_mib"] - short["growth_mib"] <= bound_mib, (short, long)
    for run, seconds in ((short, 2.0), (long, 8.0)):
        info = read_video_info(run["path"])
        assert info["frame_count"] == frames[seconds] and (info["width"], info["height"]) == (RSS_SIZE, RSS_SIZE)
