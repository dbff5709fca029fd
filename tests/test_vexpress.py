"""V-Express in the engine, on tiny models: its transformer block against the formula written out here in plain
matrix products (docs/v-express-inference.md §1.2-1.3), its open context windows, the 3×3×3 median filter against
numpy's median, and whole renders: one frame per audio frame (not cut to whole windows), driven by the keypoints
drawn, on the command line with --keypoints. Its own pipeline is run beside ours by
benchmarks/vexpress_side_by_side.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import speech_like
from emo_pipeline.cli import main
from emo_pipeline.config import tiny_vexpress_config
from emo_pipeline.io.media import read_video_info
from emo_pipeline.models.spatial_transformer import ReferenceKV, ReferenceTransformerBlock
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.poses.face_keypoint_sequence import FaceKeypointSequence
from emo_pipeline.poses.sequence import PoseError
from emo_pipeline.sampling.context_windows import context_windows
from emo_pipeline.sampling.median_filter import median_filtered
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import randomize_, tiny_components, write_tiny_model_folder
from test_batch import write_wav
from test_face import scrfd_model

FACE = np.array([[20.0, 26.0], [44.0, 26.0], [32.0, 40.0]], np.float32)  # eyes and nose in a 64² frame


# ------------------------------------------------------------------------------------------ the block
def attention(attn, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """diffusers' Attention written out: heads of q·kᵀ/√d, softmax, ·v, the output projection with its bias."""
    q, k, v = hidden @ attn.to_q.weight.T, context @ attn.to_k.weight.T, context @ attn.to_v.weight.T
    heads = attn.heads
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(hidden.shape)
    return out @ attn.to_out[0].weight.T + attn.to_out[0].bias


@torch.no_grad()
def test_the_backbone_block_reads_the_portrait_in_its_own_attention_scaled_by_0_95():
    torch.manual_seed(0)
    block = randomize_(ReferenceTransformerBlock(16, 2, 8, context_scale=3.0, separate_reference=True,
                                                 reads_reference=True, reference_scale=0.95), 0).eval()
    x, ref, audio = torch.randn(3, 6, 16), torch.randn(1, 5, 16), torch.randn(3, 4, 8)
    # row 0: guidance's unconditional row (V-Express's zero reference bank); rows 1, 2 read the portrait
    kv = ReferenceKV(block.attn1_5.to_k(ref), block.attn1_5.to_v(ref), (None, 0, 0))
    got, feature = block(x, audio, kv)

    bank = torch.cat([torch.zeros(1, 5, 16), ref, ref])
    h = x + attention(block.attn1, block.norm1(x), block.norm1(x))
    h = h + 0.95 * attention(block.attn1_5, block.norm1_5(h), bank)
    n2 = block.norm2(h)
    h = h + 3.0 * attention(block.attn2, n2, audio)
    expected = h + block.ff(block.norm3(h))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feature, n2, rtol=1e-6, atol=1e-6)
    assert (got[0] - got[1]).abs().max() > 1e-3  # the portrait changes what the block gives


@torch.no_grad()
def test_the_referencenet_block_hands_out_its_norm2_output_and_adds_attn2_s_bias_for_its_zero_token():
    torch.manual_seed(1)
    block = randomize_(ReferenceTransformerBlock(16, 2, 8, separate_reference=True), 1).eval()
    assert block.attn1_5 is None and block.norm1_5 is None  # the ReferenceNet's blocks have no reference attention
    x = torch.randn(1, 6, 16)
    got, feature = block(x, torch.zeros(1, 1, 8))
    h = x + attention(block.attn1, block.norm1(x), block.norm1(x))
    torch.testing.assert_close(feature, block.norm2(h), rtol=1e-6, atol=1e-6)
    h = h + block.attn2.to_out[0].bias  # one zero token: zero keys and values, the output bias alone
    torch.testing.assert_close(got, h + block.ff(block.norm3(h)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize("frames", [24, 44, 45, 50, 64, 7])
def test_open_windows_cover_every_frame_once_or_twice_and_never_wrap(frames):
    windows = context_windows(frames, 24, 4, wrap=False)
    assert all(w == list(range(w[0], w[0] + len(w))) for w in windows)  # contiguous, no wrap
    assert windows[0][0] == 0 and windows[-1][-1] == frames - 1
    assert all(len(w) == min(24, frames) for w in windows)
    starts = [w[0] for w in windows]
    assert starts[:-1] == list(range(0, 20 * (len(windows) - 1), 20)) or len(windows) == 1
    if (frames - 24) % 20 == 0:  # V-Express's own lengths (24 + 20k): exactly its windows
        assert starts == list(range(0, frames - 23, 20))
    count = np.zeros(frames, int)
    for w in windows:
        count[w] += 1
    assert count.min() == 1 and count.max() <= 3  # a last window moved back may overlap two before it


# ------------------------------------------------------------------------------------------ median filter
def numpy_median_3d(video: np.ndarray) -> np.ndarray:
    """video [T, H, W, C] → each value the median of its 3×3×3 (time, rows, columns) neighbourhood, reflect-padded
    by one on the three axes (V-Express's median_filter_3d, written with numpy)."""
    padded = np.pad(video, ((1, 1), (1, 1), (1, 1), (0, 0)), mode="reflect")
    t, h, w, _ = video.shape
    stack = [padded[dt: dt + t, dy: dy + h, dx: dx + w] for dt in range(3) for dy in range(3) for dx in range(3)]
    return np.median(np.stack(stack), axis=0)


@pytest.mark.parametrize("chunks", [[9], [1] * 9, [3, 1, 4, 1], [2, 7], [1, 8]])
def test_the_streamed_median_filter_is_numpy_s_3x3x3_median_whatever_the_chunks(chunks):
    video = torch.rand(sum(chunks), 5, 6, 3, generator=torch.Generator().manual_seed(len(chunks)))
    parts = list(video.split(chunks))
    out = list(median_filtered(iter(parts)))
    got = torch.cat(out)
    np.testing.assert_allclose(got.numpy(), numpy_median_3d(video.numpy()), atol=0)
    assert sum(len(o) for o in out) == video.shape[0]


def test_a_resumed_filter_takes_the_frame_before_as_the_first_frame_s_neighbour():
    video = torch.rand(8, 4, 4, 3, generator=torch.Generator().manual_seed(3))
    whole = numpy_median_3d(video.numpy())
    resumed = torch.cat(list(median_filtered(iter(video[5:].split(2)), before=video[4])))
    np.testing.assert_allclose(resumed.numpy(), whole[5:], atol=0)


# ------------------------------------------------------------------------------------------ renders
@pytest.fixture(scope="module")
def pipe():
    config = tiny_vexpress_config()
    net, vae, encoder = tiny_components(config, seed=2)
    return EMOPipeline(net, vae, encoder)


def keypoints(frames: int, drift: float = 0.0) -> FaceKeypointSequence:
    moves = np.arange(frames, dtype=np.float32)[:, None, None] * np.array([drift, drift / 2], np.float32)
    return FaceKeypointSequence(torch.from_numpy(FACE[None] + moves), frame_size=64, fps=30.0)


def render(pipe, seconds: float, poses, steps: int = 2) -> torch.Tensor:
    audio = pipe.encode_audio(speech_like(seconds)[None], 16000)
    portrait = pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(5)))
    options = SamplingOptions(seed=1, steps=steps, poses=poses(audio.num_frames) if callable(poses) else poses)
    return torch.cat(list(pipe.iter_clips(portrait, audio, options)))


def test_a_render_has_one_frame_per_audio_frame_not_whole_windows(pipe):
    # 0.5 s at 30 fps: 15 frames; V-Express's own loop would cut it to 24 + 20k frames and change the fps
    video = render(pipe, 0.5, keypoints)
    assert video.shape == (15, 64, 64, 3) and torch.isfinite(video).all()


@torch.no_grad()
def test_the_drawn_keypoints_drive_the_frames():
    config = tiny_vexpress_config()
    net, vae, encoder = tiny_components(config, seed=2)
    net.face_locator.conv_out.weight.mul_(30)  # random tiny weights: make the guider's share show above round-off
    pipe = EMOPipeline(net, vae, encoder)
    still = render(pipe, 0.4, keypoints)
    again = render(pipe, 0.4, keypoints)
    moving = render(pipe, 0.4, lambda n: keypoints(n, drift=2.0))
    assert torch.equal(still, again)
    first, last = ((still[i] - moving[i]).abs().max().item() for i in (0, -1))
    assert last > 1e-3  # the last frame's keypoints are drawn 22 px away from the still ones
    assert first < last  # the first frame's are the same in both (its window still sees the others)


def test_a_render_without_keypoints_or_with_too_few_is_refused_plainly(pipe):
    with pytest.raises(PoseError, match="three face keypoints.*fix_face"):
        render(pipe, 0.3, None)
    with pytest.raises(PoseError, match="has 4 frames for a 9-frame video"):
        render(pipe, 0.3, keypoints(4))


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("vexpress_cli")
    net = write_tiny_model_folder(root / "models", "vx", tiny_vexpress_config())
    scrfd_model(net.parent / "scrfd_10g_bnkps.onnx")  # SCRFD's output format, faces planted (tests/test_face.py)
    write_wav(root / "voice.wav", 0.4)
    kps = [(FACE * 8 + i).astype(np.float32) for i in range(6)]  # V-Express's kps.pth: numpy arrays, 512² pixels
    torch.save(kps, root / "kps.pth")
    return root


def test_generate_draws_the_photo_s_keypoints_by_default_and_a_kps_file_s_with_keypoints(place, capsys):
    out = place / "still.mp4"
    main(["generate", "--model", str(place / "models" / "vx"), "--audio", str(place / "voice.wav"),
          "--out", str(out), "--steps", "1", "--no-resume"])
    said = capsys.readouterr().out
    assert "the photo's own in every frame (fix_face" in said
    assert read_video_info(out)["frame_count"] == 12  # 0.4 s at 30 fps
    moving = place / "moving.mp4"
    main(["generate", "--model", str(place / "models" / "vx"), "--audio", str(place / "voice.wav"),
          "--keypoints", str(place / "kps.pth"), "--out", str(moving), "--steps", "1", "--no-resume"])
    said = capsys.readouterr().out
    assert "no_retarget" in said and "kps.pth" in said
    assert read_video_info(moving)["frame_count"] == 12


def test_generate_refuses_a_missing_keypoint_file_before_loading(place, capsys):
    code = main(["generate", "--model", str(place / "models" / "vx"), "--keypoints", str(place / "nope.pth"),
                 "--out", str(place / "x.mp4")])
    assert code != 0
    err = capsys.readouterr().err
    assert "--keypoints" in err and "no such file" in err
    assert not (place / "x.mp4").exists()


def test_median_filter_in_the_loop_matches_the_filter_on_unfiltered_frames(pipe, monkeypatch):
    """The loop's output is the unfiltered decode put through the filter (so the filter sits where V-Express puts
    it: after decoding, before saving)."""
    from emo_pipeline.families import FAMILIES

    filtered = render(pipe, 0.3, keypoints)
    monkeypatch.setitem(FAMILIES, "vexpress", __import__("dataclasses").replace(FAMILIES["vexpress"],
                                                                                  median_filter=False))
    raw = render(pipe, 0.3, keypoints)
    np.testing.assert_allclose(filtered.numpy(), numpy_median_3d(raw.numpy()), atol=1e-6)
    assert (filtered - raw).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------ modes and cost
@torch.no_grad()
def test_low_vram_and_fp8_give_the_same_video_and_every_preset_runs():
    config = tiny_vexpress_config()
    net, vae, encoder = tiny_components(config, seed=2)
    normal = render(EMOPipeline(net, vae, encoder), 0.4, keypoints)
    low = render(EMOPipeline(net, vae, encoder, low_vram=True), 0.4, keypoints)
    torch.testing.assert_close(low, normal, atol=1e-4, rtol=0)  # rows one by one, VAE frame by frame
    fp8 = render(EMOPipeline(*tiny_components(config, seed=2), low_vram=True).store_weights_fp8(), 0.4, keypoints)
    assert torch.isfinite(fp8).all() and (fp8 - normal).abs().mean() < 0.05
    for preset in ("balanced", "fast"):
        pipe = EMOPipeline(net, vae, encoder)
        audio = pipe.encode_audio(speech_like(0.4)[None], 16000)
        portrait = pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(5)))
        video = torch.cat(list(pipe.iter_clips(portrait, audio, SamplingOptions(
            seed=1, preset=preset, poses=keypoints(audio.num_frames)))))
        assert video.shape == normal.shape and torch.isfinite(video).all()


def test_full_size_costs_follow_its_steps_and_its_host_memory_its_frames():
    from emo_pipeline.config import vexpress_config
    from emo_pipeline.cost import full_size_pipeline, host_latent_bytes, video_flops
    from emo_pipeline.memory_plan import counted_peak
    from emo_pipeline.sampling.presets import resolve_options

    pipe = full_size_pipeline(vexpress_config())
    costs = {preset: video_flops(pipe, SamplingOptions(preset=preset), 2.0).total
             for preset in ("quality", "balanced", "fast")}
    # the denoiser dominates: its 25 steps, 20 and 12 (balanced, fast)
    assert 0.78 < costs["balanced"] / costs["quality"] < 0.82 and 0.46 < costs["fast"] / costs["quality"] < 0.52
    options = resolve_options(SamplingOptions(), vexpress_config())
    peaks = {mode: counted_peak(vexpress_config(), options, torch.float16, mode, 8) for mode in ("normal", "low_vram")}
    assert peaks["normal"] > peaks["low_vram"]
    # host memory: the latents (4 copies) and the resampled audio tokens, per frame
    per_frame = host_latent_bytes(vexpress_config(), 2, torch.float16) - host_latent_bytes(vexpress_config(), 1,
                                                                                           torch.float16)
    assert per_frame == (4 * 4 * 64 * 64 + 5 * 768) * 2


def test_convert_writes_one_safetensors_file_that_loads_as_v_express(tmp_path, monkeypatch):
    from emo_pipeline.io import loading
    from emo_pipeline.tiny import write_tiny_vexpress_folder

    monkeypatch.setattr(loading, "vexpress_config", lambda: tiny_vexpress_config(name="v-express"))
    folder = write_tiny_vexpress_folder(tmp_path)
    out = loading.convert_checkpoint(folder, tmp_path / "vx.safetensors", dtype=torch.float16)
    assert loading.network_config(out).family == "vexpress"
    assert "V-Express family" in loading.describe_checkpoint(out)
    converted, original = loading.load_net(out).state_dict(), loading.load_net(folder).state_dict()
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k].half().float()) for k in original)
