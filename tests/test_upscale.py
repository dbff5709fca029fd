"""Hallo2's high-resolution stage (emo_pipeline/upscale/): key list, loading, alignment, chunk blending,
output sizes, flat memory and the CLI, with tiny random networks on the CPU."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import ROOT, speech_like
from emo_pipeline.upscale.align import paste_faces, similarity, template, warp_faces
from emo_pipeline.upscale.chunks import blend_chunks, chunk_spans
from emo_pipeline.upscale.codeformer import HALLO2_SR, TemporalCodeFormer, tiny_codeformer_config
from emo_pipeline.upscale.loading import load_codeformer, load_realesrgan
from emo_pipeline.upscale.rrdbnet import REALESRGAN_X2PLUS, RRDBNet, tiny_rrdb_config, upscale_tiled
from emo_pipeline.upscale.video import FaceUpscaler, UpscaleSettings

KEYS = ROOT / "tests" / "data" / "hallo2_sr_keys.tsv"
TINY_FACE = tiny_codeformer_config().img_size  # 32


def key_rows(network: str) -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            net, key, shape = line.split("\t")
            if net == network:
                rows[key] = tuple(int(s) for s in shape.split(",") if s)
    return rows


@pytest.mark.parametrize("network,build", [("codeformer", lambda: TemporalCodeFormer(HALLO2_SR)),
                                           ("realesrgan", lambda: RRDBNet(REALESRGAN_X2PLUS))])
def test_full_size_networks_match_hallo2s_key_list_strictly(network, build):
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    theirs = key_rows(network)
    assert len(theirs) > 600
    assert sorted(set(theirs) - set(ours)) == [] and sorted(set(ours) - set(theirs)) == []
    assert {k: s for k, s in ours.items() if theirs[k] != s} == {}


def test_full_size_config_is_video_sr_pys():
    header = KEYS.read_text().splitlines()[:12]
    assert any("dim_embd=512, codebook_size=1024, n_head=8" in line for line in header)
    cfg = HALLO2_SR
    assert (cfg.dim_embd, cfg.codebook_size, cfg.n_head, cfg.n_layers, cfg.connect_list) == (
        512, 1024, 8, 9, ("32", "64", "128", "256"))
    assert key_rows("codeformer")["ft_layers.8.temp_attn.in_proj_weight"] == (1536, 512)  # temporal attention per layer
    assert "ft_layers.9.norm1.weight" not in key_rows("codeformer")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TemporalCodeFormer(tiny_codeformer_config()).eval(), RRDBNet(tiny_rrdb_config()).eval()


def face_at(height: int, width: int, size: float):
    """Landmarks of a face of `size` pixels (the template's scale) centred in the frame."""
    pts = template(512) * (size / 512) + np.array([width / 2 - size / 2, height / 2 - size / 2])
    return lambda frame: pts


# --- alignment -------------------------------------------------------------------------------------

def test_similarity_recovers_a_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = template(512)
    m = similarity(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)
    with pytest.raises(ValueError, match=r"\[K, 2\]"):
        similarity(src[:1], src[:1])


@pytest.mark.parametrize("scale", [1, 2])
def test_warped_face_pasted_back_lands_where_it_came_from(scale):
    gen = torch.Generator().manual_seed(1)
    frame = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 10, generator=gen), size=(80, 100), mode="bicubic")
    m = similarity(face_at(80, 100, 50)(None), template(64))
    face = warp_faces(frame, [m], 64)
    background = torch.nn.functional.interpolate(frame, scale_factor=scale, mode="bilinear") if scale > 1 else frame
    grey = torch.zeros_like(background)
    pasted = paste_faces(grey, face, [m], scale, feather=1)
    inside = (slice(None), slice(None), slice(30 * scale, 50 * scale), slice(40 * scale, 60 * scale))
    assert (pasted[inside] - background[inside]).abs().max() < 0.03  # the face went back where it was taken
    assert pasted[..., :5 * scale, :5 * scale].abs().max() == 0  # outside the face square: the background


# --- chunks ----------------------------------------------------------------------------------------

def hallo2_spans(length, chunk=16, overlay=4):
    """scripts/video_sr.py's loop, restated."""
    spans, i, j = [], 0, 0
    while i < length and j < length:
        j = min(i + chunk, length)
        spans.append((i, j))
        i = j - overlay
    return spans


@pytest.mark.parametrize("n", [1, 5, 16, 17, 28, 29, 40, 100])
def test_chunk_spans_are_hallo2s(n):
    assert chunk_spans(n) == hallo2_spans(n)


@pytest.mark.parametrize("mode", ["linear", "hallo2"])
def test_chunk_blending_matches_an_independent_computation(tiny, mode):
    net = tiny[0]
    gen = torch.Generator().manual_seed(2)
    faces = torch.rand(29, 3, TINY_FACE, TINY_FACE, generator=gen)
    restore = lambda x: net(x[None] * 2 - 1, w=0.5)[0]  # noqa: E731

    got = list(blend_chunks(((i, f) for i, f in enumerate(faces)), restore, 16, 4, mode))
    assert [i for i, _ in got] == list(range(29))

    spans = [(0, 16), (12, 28), (24, 29)]  # written out: Hallo2's windows for 29 frames
    runs = [restore(faces[a:b]) for a, b in spans]
    assert not torch.allclose(runs[0][12], runs[1][0], atol=1e-4)  # the chunk a frame is in matters
    expected = []
    for i in range(29):
        inside = [(r, i - a) for (a, b), r in zip(spans, runs) if a <= i < b]
        if len(inside) == 1:
            expected.append(inside[0][0][inside[0][1]])
        else:
            (early, i_early), (late, j) = inside  # frame i is the j-th of the 4 frames the two windows share
            w = (j + 1) / 5 if mode == "linear" else 0.0
            expected.append(early[i_early] * (1 - w) + late[j] * w)
    torch.testing.assert_close(torch.stack([r for _, r in got]), torch.stack(expected), rtol=0, atol=1e-6)


def test_bad_chunking_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="overlap must be from 0 to half the chunk"):
        list(blend_chunks([], lambda x: x, 16, 9))
    with pytest.raises(ValueError, match="upscale must be 1, 2, 3 or 4"):
        UpscaleSettings(scale=5).check()
    with pytest.raises(ValueError, match="fidelity"):
        UpscaleSettings(fidelity=1.5).check()


# --- the video -------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_size_and_frame_count(tiny, scale):
    codeformer, rrdb = tiny
    up = FaceUpscaler(codeformer, rrdb, face_at(40, 48, 24))
    frames = torch.rand(19, 40, 48, 3, generator=torch.Generator().manual_seed(3))
    out = up.upscale(frames, UpscaleSettings(scale=scale))
    assert out.shape == (19, 40 * scale, 48 * scale, 3)
    assert 0 <= out.min() and out.max() <= 1
    # the corners, outside the face square, are the background alone: the frame itself at ×1,
    # RealESRGAN's ×2 (resized for ×4) otherwise
    if scale == 1:
        torch.testing.assert_close(out[:, :4, :4], frames[:, :4, :4])
    else:
        bg = upscale_tiled(rrdb, frames[:1].permute(0, 3, 1, 2))
        if scale == 4:
            bg = torch.nn.functional.interpolate(bg, size=(160, 192), mode="bicubic", antialias=True).clamp(0, 1)
        torch.testing.assert_close(out[0, :4, :4], bg[0, :, :4, :4].permute(1, 2, 0), rtol=0, atol=1e-5)
    centre = out[:, 18 * scale: 22 * scale, 22 * scale: 26 * scale]
    plain = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), scale_factor=scale, mode="bicubic")
    assert (centre - plain.permute(0, 2, 3, 1)[:, 18 * scale: 22 * scale, 22 * scale: 26 * scale]).abs().mean() > 0.02


def test_memory_is_flat_in_the_videos_length(tiny):
    """Frames held inside the stage (taken in but not yet given out) do not grow with the length."""
    codeformer, _ = tiny
    up = FaceUpscaler(codeformer, None, face_at(32, 32, 16))

    def held_at_most(n: int) -> int:
        taken = {"n": 0}

        def source():
            for _ in range(n):
                taken["n"] += 1
                yield torch.rand(1, 32, 32, 3)

        peak = given = 0
        for _ in up.stream(source(), UpscaleSettings(scale=1, background="bicubic")):
            given += 1
            peak = max(peak, taken["n"] - given)
        assert given == n
        return peak

    short, long = held_at_most(24), held_at_most(96)  # 2 and 8 chunks
    assert long == short and long <= 16  # one chunk at most


def test_realesrgan_tiles_equal_one_pass(tiny):
    rrdb = tiny[1]
    image = torch.rand(1, 3, 101, 130, generator=torch.Generator().manual_seed(4))
    whole = upscale_tiled(rrdb, image, tile=4096)
    tiled = upscale_tiled(rrdb, image, tile=32, pad=40)
    assert whole.shape == (1, 3, 202, 260)
    # each tile sees 40 pixels around it, more than the tiny net's reach (17 convolutions at half resolution:
    # 34 pixels), so the stitched result is the one-pass result
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    narrow = upscale_tiled(rrdb, image, tile=32, pad=4)  # and the margin is what makes it so
    assert (narrow - whole).abs().max() > 1e-4
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


# --- loading ---------------------------------------------------------------------------------------

def test_net_g_params_ema_loads_with_weights_only(tmp_path, tiny):
    codeformer, rrdb = tiny
    path = tmp_path / "hallo2" / "net_g.pth"
    path.parent.mkdir()
    torch.save({"params_ema": codeformer.state_dict(), "params": {k: v * 0 for k, v in codeformer.state_dict().items()}},
               path)
    loaded = load_codeformer(path, tiny_codeformer_config())
    faces = torch.rand(1, 3, 3, TINY_FACE, TINY_FACE) * 2 - 1
    torch.testing.assert_close(loaded(faces), codeformer(faces), rtol=0, atol=0)  # params_ema, not params
    torch.save({"params_ema": rrdb.state_dict()}, tmp_path / "bg.pth")
    assert isinstance(load_realesrgan(tmp_path / "bg.pth", tiny_rrdb_config()), RRDBNet)


class Payload:  # pickled as a global: weights_only must refuse it
    pass


def test_loading_refuses_other_files_with_the_fix(tmp_path, tiny):
    codeformer, rrdb = tiny
    torch.save({"params_ema": rrdb.state_dict()}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"is not Hallo2's net_g.pth.*missing.*download hallo2-upscaler"):
        load_codeformer(tmp_path / "wrong.pth", tiny_codeformer_config())
    torch.save({"params_ema": codeformer.state_dict()}, tmp_path / "full.pth")
    with pytest.raises(ValueError, match="of another shape"):
        load_codeformer(tmp_path / "full.pth", replace(tiny_codeformer_config(), codebook_size=24))
    torch.save({"params_ema": Payload()}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_codeformer(tmp_path / "pickle.pth", tiny_codeformer_config())
    with pytest.raises(FileNotFoundError, match="download hallo2-upscaler"):
        FaceUpscaler.from_folders([tmp_path / "empty"])


# --- command line ----------------------------------------------------------------------------------

def test_cli_upscale_streams_an_mp4(tmp_path, capsys):
    from emo_pipeline.cli import main
    from emo_pipeline.io.media import read_video_info, write_video

    source = tmp_path / "face.mp4"
    sound = torch.sin(torch.arange(16000 * 1.2) / 16000 * 2 * torch.pi * 220)[None] * 0.3
    write_video(source, torch.rand(30, 48, 48, 3), 25, audio=(sound, 16000))
    out = tmp_path / "face_x2.mp4"
    assert main(["upscale", str(source), "--out", str(out), "--random", "--models", str(tmp_path)]) == 0
    info = read_video_info(out)
    assert (info["width"], info["height"], info["frame_count"]) == (96, 96, 30)
    assert info["audio_duration"] == pytest.approx(1.2, abs=1e-3)
    assert main(["upscale", str(source), "--out", str(tmp_path / "x.mp4"), "--models", str(tmp_path)]) == 2
    assert "download hallo2-upscaler" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "missing.mp4"), "--out", str(out), "--random"]) == 2


def test_generate_upscale_2_doubles_the_video(tmp_path):
    from emo_pipeline.cli import main
    from emo_pipeline.io.media import read_video_info

    from emo_pipeline.io.media import write_video

    voice = tmp_path / "voice.mp4"
    write_video(voice, torch.zeros(25, 16, 16, 3), 25, audio=(speech_like(1.0), 16000))
    out = tmp_path / "up.mp4"
    assert main(["generate", "--random", "--steps", "1", "--audio", str(voice), "--upscale", "2",
                 "--upscale-background", "bicubic", "--out", str(out)]) == 0
    info = read_video_info(out)
    assert info["frame_count"] == 25 and info["width"] == info["height"] == 2 * 64  # the tiny model's 64²
