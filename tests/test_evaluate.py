"""Scoring whole videos (emo_pipeline/metrics/evaluate.py, `evaluate`, `batch --evaluate`, `benchmark --quality`,
EMO Evaluate, `download metrics`).

Random S3FD weights find no faces and full-size SyncNet costs seconds per window on two cores, so the plumbing is
tested with test doubles: a detector returning a known box per frame (it implements detect_faces), a small network
with SyncNet's forward_lip / forward_aud, and a face analyzer embedding each face by its colour. Their scores mean
nothing; frame counts, faces-lost accounting, the audio each track gets, CSIM's bookkeeping, JSON, the table and the
errors are what is checked. Real MP4s are written with PyAV (io/media.write_video, with sound)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import speech_like
from emo_pipeline.cli import main
from emo_pipeline.face.analysis import FaceInfo
from emo_pipeline.io.media import write_video
from emo_pipeline.metrics import evaluate as ev
from emo_pipeline.metrics.face_tracks import NoFaceTrackError

SIDE = 160
BOX = (20.0, 16.0, 140.0, 144.0)  # 120 × 128 px: over S3FD tracking's 100-px minimum


class StubDetector:
    """S3FD's detect_faces with a known answer: BOX in every frame, none in the frames listed in `missing` (counted
    in call order, which is frame order) or marked by a white corner (frames(lost_from=...)), none at all when
    `faces` is False."""

    def __init__(self, missing: set[int] = frozenset(), faces: bool = True) -> None:
        self.missing, self.faces, self.calls = set(missing), faces, 0

    def detect_faces(self, image, conf_th=0.8, scales=(1,)):
        index, self.calls = self.calls, self.calls + 1
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        if not self.faces or index in self.missing or image[:8, :8].mean() > 128:
            return np.zeros((0, 5))
        return np.array([[*BOX, 0.99]])


class StubSyncNet(nn.Module):
    """SyncNet's two embedding calls on a few random weights: lip windows and MFCC windows pooled, projected."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lip, self.aud = nn.Linear(15, 16), nn.Linear(13, 16)
        self.lip_windows = 0

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[1:]) == (3, 5, 224, 224)
        self.lip_windows += x.shape[0]
        return self.lip(x.mean(dim=(3, 4)).flatten(1) / 255)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[1:]) == (1, 13, 20)
        return self.aud(x.mean(dim=(1, 3)))


class StubAnalyzer:
    """FaceAnalyzer's faces(): one face at BOX whose embedding is the face region's mean colour (and a constant)."""

    embedder = object()

    def __init__(self) -> None:
        self.calls = 0

    def faces(self, image: np.ndarray) -> list[FaceInfo]:
        self.calls += 1
        x0, y0, x1, y1 = (int(v) for v in BOX) if image.shape[0] >= BOX[3] else (0, 0, image.shape[1], image.shape[0])
        colour = image[y0:y1, x0:x1].reshape(-1, 3).mean(0) / 255
        return [FaceInfo(BOX, 0.9, np.zeros((5, 2)), np.concatenate([colour - 0.5, [0.1]]))]


def models(missing=frozenset(), faces=True, analyzer=None) -> ev.MetricModels:
    return ev.MetricModels(StubSyncNet(), StubDetector(missing, faces), analyzer)


def frames(count: int, seed: int = 0, lost_from: int | None = None) -> torch.Tensor:
    """A face-coloured square on a dark background, its colour drifting a little frame by frame; from frame
    `lost_from` on a white corner tells StubDetector to find no face."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.full((count, SIDE, SIDE, 3), 0.1)
    x0, y0, x1, y1 = (int(v) for v in BOX)
    drift = 0.05 * torch.rand(count, 1, 1, 3, generator=gen)
    video[:, y0:y1, x0:x1] = torch.tensor([0.8, 0.6, 0.5]) + drift
    if lost_from is not None:
        video[lost_from:, :8, :8] = 1.0
    return video


def clip(path: Path, count: int = 120, fps: float = 25, sound: bool = True, lost_from: int | None = None) -> Path:
    return write_video(path, frames(count, lost_from=lost_from), fps,
                       audio=(speech_like(count / fps), 16000) if sound else None)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return clip(tmp_path_factory.mktemp("clips") / "talk.mp4")


def test_a_video_is_scored_with_its_frames_and_lost_faces_counted(video):
    m = models(missing=set(range(110, 120)))
    stages = []
    scores = ev.evaluate_video(video, m, on_progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert scores.frames == 120 and scores.faces_lost == 10
    (track,) = scores.tracks
    assert (track.first_frame, track.last_frame) == (0, 109)
    # evaluate(): min(110 frames, 110 frames of sound) − 5 windows, covering windows + 4 frames
    assert track.windows == 105 and scores.frames_scored == 109 and m.syncnet.lip_windows == 105
    assert math.isfinite(scores.sync_c) and scores.sync_c >= 0 and math.isfinite(scores.sync_d)
    assert -15 <= scores.offset <= 15 and scores.offset == track.offset
    assert scores.csim is None and scores.fps == 25
    assert m.detector.calls == 120  # detection once per 25-fps frame
    detected = [d for s, d, _ in stages if s == "detecting faces"]
    assert detected == list(range(1, 121)) and {s for s, _, _ in stages} == {
        "detecting faces", "cropping faces", "scoring lip sync"}
    assert json.loads(json.dumps(scores.as_dict()))["tracks"][0]["windows"] == 105


def test_a_30_fps_video_is_taken_at_25_fps_by_time(tmp_path):
    path = clip(tmp_path / "thirty.mp4", count=150, fps=30)
    m = models()
    scores = ev.evaluate_video(path, m)
    assert scores.frames == 125 and m.detector.calls == 125 and scores.faces_lost == 0
    assert scores.tracks[0].windows == 120  # 125 frames, 5 s of sound: 125 − 5


def test_each_track_is_scored_on_its_own_span_of_the_sound(tmp_path, video):
    """A track from frame 10 gets the sound from 0.4 s: the same scores as a video cut there."""
    m = models(missing=set(range(10)))
    late = ev.evaluate_video(video, m)
    assert late.tracks[0].first_frame == 10 and late.faces_lost == 10
    from emo_pipeline.io.media import load_audio

    wave, rate = load_audio(video)
    frame = torch.from_numpy(np.stack([f for f in ev.video_frames(video)[0]()][10:]))
    cut = ev.evaluate_frames(ev.tensor_frames(frame.float() / 255), 25, (wave[:, int(0.4 * rate):], rate), models())
    assert cut.frames == 110 and cut.tracks[0].windows == late.tracks[0].windows
    assert cut.sync_c == pytest.approx(late.sync_c, abs=1e-4) and cut.offset == late.offset


def test_csim_against_the_reference_portrait(video, tmp_path):
    analyzer = StubAnalyzer()
    m = models(missing=set(range(105, 120)), analyzer=analyzer)
    portrait = frames(1)[0]
    scores = ev.evaluate_video(video, m, reference=portrait)
    assert scores.csim_frames == 105  # the tracked frames only
    assert 0.9 < scores.csim <= 1.0 + 1e-9 and scores.csim_min <= scores.csim
    assert analyzer.calls == 1 + 120  # the portrait, then each frame once
    other = torch.full((SIDE, SIDE, 3), 0.1)
    other[..., 2] = 0.9
    assert ev.evaluate_video(video, models(analyzer=StubAnalyzer()), reference=other).csim < scores.csim


def test_plain_errors(video, tmp_path):
    silent = clip(tmp_path / "silent.mp4", sound=False)
    with pytest.raises(ValueError, match="silent.mp4 has no audio track: give the sound"):
        ev.evaluate_video(silent, models())
    assert ev.evaluate_video(silent, models(), audio=video).tracks  # the sound from another file
    with pytest.raises(NoFaceTrackError, match=r"talk.mp4: lip sync cannot be scored: no face could be tracked"):
        ev.evaluate_video(video, models(faces=False))
    short = clip(tmp_path / "short.mp4", count=50)
    with pytest.raises(NoFaceTrackError, match="at least 100 frames"):
        ev.evaluate_video(short, models())
    with pytest.raises(FileNotFoundError, match="No such video file"):
        ev.evaluate_video(tmp_path / "nothing.mp4", models())
    with pytest.raises(ev.MissingMetricModels, match=r"download metrics --to .*models"):
        ev.MetricModels.load([tmp_path / "models"])
    with pytest.raises(ev.MissingMetricModels, match="download face"):
        ev.evaluate_video(video, models(), reference=frames(1)[0])
    with pytest.raises(ValueError, match="the sound ends before the face tracks do"):  # under SyncNet's 6 frames
        ev.evaluate_video(video, models(), audio=(speech_like(0.2), 16000))


def test_the_metric_files_are_found_in_metrics_or_at_the_top(tmp_path):
    (tmp_path / "a" / "metrics").mkdir(parents=True)
    for name in (ev.SYNCNET_FILE, ev.S3FD_FILE):
        (tmp_path / "a" / "metrics" / name).write_bytes(b"x")
    assert ev.find_metric_files([tmp_path / "b", tmp_path / "a"])[0] == tmp_path / "a" / "metrics" / ev.SYNCNET_FILE
    (tmp_path / "a" / "metrics" / ev.S3FD_FILE).unlink()
    with pytest.raises(ev.MissingMetricModels, match=r"sfd_face.pth is not in .*a/metrics"):
        ev.find_metric_files([tmp_path / "a"])


# ---------------------------------------------------------------------------- the command line
@pytest.fixture
def stubbed(monkeypatch):
    """`evaluate` with the test doubles in place of the files in --models."""
    asked = []

    def load(folders, device, identity):
        asked.append((folders, device, identity))
        return models(analyzer=StubAnalyzer() if identity else None)

    from emo_pipeline.cli import evaluate as cli

    monkeypatch.setattr(cli, "load_metric_models", load)
    return asked


def test_evaluate_prints_a_table_and_json(video, tmp_path, stubbed, capsys):
    from PIL import Image

    Image.fromarray((frames(1)[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "portrait.png")
    first = clip(tmp_path / "first.mp4", lost_from=115)
    second = clip(tmp_path / "second.mp4", count=130, lost_from=115)
    assert main(["evaluate", str(first), str(second), "--models", str(tmp_path), "--reference",
                 str(tmp_path / "portrait.png"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    header, row1, row2 = out.splitlines()[:3]
    assert header.split()[:4] == ["video", "Sync-C", "Sync-D", "offset"] and "faces lost" in header
    assert row1.split()[0] == str(first) and row1.split()[-2:] == ["114", "5"]  # scored, lost
    assert row2.split()[-2:] == ["114", "15"] and "Sync-C: SyncNet's confidence" in out
    assert 0.9 < float(row1.split()[-3]) <= 1.0  # CSIM
    assert stubbed[0] == ([tmp_path], "cpu", True)
    assert main(["evaluate", str(first), "--json", "--models", str(tmp_path)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["video"] == str(first) and row["frames"] == 120 and row["faces_lost"] == 5 and row["csim"] is None
    assert set(row) >= {"sync_c", "sync_d", "offset", "frames_scored", "tracks"}


def test_evaluate_errors_are_plain(video, tmp_path, stubbed, capsys, monkeypatch):
    assert main(["evaluate", str(tmp_path / "none.mp4")]) == 2
    assert "error: No such video file" in capsys.readouterr().err
    assert main(["evaluate", str(video), "--audio", str(tmp_path / "none.wav")]) == 2
    assert "No such audio file" in capsys.readouterr().err
    silent = clip(tmp_path / "silent.mp4", sound=False)
    assert main(["evaluate", str(silent)]) == 2
    assert "has no audio track" in (err := capsys.readouterr().err) and "Traceback" not in err
    # several videos: the one without sound is said, the other scored, the status says one failed
    assert main(["evaluate", str(silent), str(video), "--json"]) == 2
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert "has no audio track" in rows[0]["error"] and rows[1]["frames"] == 120
    monkeypatch.undo()  # the real loader: no files in --models
    assert main(["evaluate", str(video), "--models", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "python -m emo_pipeline download metrics --to" in err and "syncnet_v2.model" in err


# ---------------------------------------------------------------------------- batch --evaluate, benchmark --quality
def write_wav(path: Path, seconds: float) -> Path:
    from test_batch import write_wav as wav

    return wav(path.with_suffix(".wav"), seconds)


def test_batch_writes_each_finished_video_s_scores(tmp_path, monkeypatch, capsys):
    import emo_pipeline.cli.batch as batch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty model folder
    jobs = tmp_path / "jobs.jsonl"
    lines = [{"audio": str(write_wav(tmp_path / "long", 4.6)), "out": "long.mp4", "random": True, "steps": 1},
             {"audio": str(write_wav(tmp_path / "short", 0.4)), "out": "short.mp4", "random": True, "steps": 1}]
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out_dir = tmp_path / "renders"
    assert main(["batch", str(jobs), "--out-dir", str(out_dir), "--evaluate"]) == 2  # no metric files: before any render
    assert "download metrics" in capsys.readouterr().err and not list(out_dir.glob("*.mp4"))
    monkeypatch.setattr(batch, "load_metric_models", lambda device: models())
    assert main(["batch", str(jobs), "--out-dir", str(out_dir), "--evaluate"]) == 0
    long, short = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert long["status"] == "done" and long["scores"]["frames"] == long["frames"] == 115
    assert long["scores"]["faces_lost"] == 0 and math.isfinite(long["scores"]["sync_c"])
    assert short["status"] == "done" and "NoFaceTrackError" in short["scores_error"] and "scores" not in short
    assert main(["batch", str(jobs), "--out-dir", str(out_dir), "--evaluate"]) == 0  # finished: skipped, scored again
    rerun = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()][2:]
    assert rerun[0]["status"] == "skipped" and rerun[0]["scores"]["frames"] == 115


def test_benchmark_quality_renders_each_mode_and_scores_it(tmp_path, monkeypatch, capsys):
    from emo_pipeline.cli import benchmark, parser

    clip_audio = write_wav(tmp_path / "voice", 4.4)
    monkeypatch.setattr(ev.MetricModels, "load", classmethod(lambda cls, folders, device, identity: models()))
    # the tiny random-weight model on one step (the preset's scheduler still differs): the renders' plumbing, fast
    defaults = parser.generate_defaults
    monkeypatch.setattr(parser, "generate_defaults", lambda: {**defaults(), "random": True, "steps": 1})
    assert main(["benchmark", "--quality", str(clip_audio), "--presets", "fast", "--modes", "normal,low_vram",
                 "--device", "cpu", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert [(r["preset"], r["mode"]) for r in rows] == [("quality", "normal"), ("fast", "normal"), ("fast", "low_vram")]
    assert all(r["frames"] == 110 and r["seconds_per_video_second"] > 0 and r["sync_c"] is not None for r in rows)
    assert rows[0]["psnr"] is None and all(r["psnr"] > 10 for r in rows[1:])
    assert "| quality | normal |" in out and "exact path" in out and "PSNR vs exact (dB)" in out
    assert sorted(p.name for p in (tmp_path / "q").glob("*.mp4")) == ["fast-low_vram.mp4", "fast-normal.mp4",
                                                                      "quality-normal.mp4"]
    same = tmp_path / "q" / "quality-normal.mp4"
    assert benchmark.video_psnr(same, same) == math.inf


# ---------------------------------------------------------------------------- EMO Evaluate
@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    import comfy_stubs

    models_dir = tmp_path_factory.mktemp("models")
    (models_dir / "emo").mkdir()
    state = comfy_stubs.install(models_dir, tmp_path_factory.mktemp("output"))
    return comfy_stubs.load_pack(), state


def _node_module():
    import sys

    return next(m for n, m in sys.modules.items() if n.endswith("nodes.evaluate") and hasattr(m, "EMOEvaluate"))


def test_the_node_shows_the_scores_and_gives_them_as_text(pack, monkeypatch):
    pack, state = pack
    module = _node_module()
    monkeypatch.setattr(module, "metric_models", lambda device: models(missing=set(range(115, 999))))
    monkeypatch.setattr(module, "face_analyzer", StubAnalyzer)
    node = pack.NODE_CLASS_MAPPINGS["EMOEvaluate"]()
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["EMOEvaluate"] == "EMO Evaluate" and node.RETURN_TYPES == ("STRING",)
    sound = {"waveform": speech_like(4.8)[None], "sample_rate": 16000}
    state.progress.clear()
    out = node.evaluate(25.0, frames=frames(120), audio=sound, portrait=frames(1))
    (text,) = out["ui"]["text"]
    assert out["result"] == (text,) and text.startswith("Sync-C ")
    assert "frames scored 114 of 120, faces lost 5, tracks 1" in text and "CSIM 0.9" in text
    assert state.progress and state.progress[-1][0] <= state.progress[-1][1]
    # 30 fps frames, no portrait: taken at 25 fps, no CSIM line
    text = node.evaluate(30.0, frames=frames(144), audio=sound)["result"][0]
    assert "of 120," in text and "CSIM" not in text
    with pytest.raises(ValueError, match="neither frames nor video"):
        node.evaluate(25.0, audio=sound)
    with pytest.raises(ValueError, match="no sound"):
        node.evaluate(25.0, frames=frames(120))
    state.interrupted = True  # Cancel: stops at the next frame
    try:
        with pytest.raises(Exception) as stopped:
            node.evaluate(25.0, frames=frames(120), audio=sound)
        assert type(stopped.value).__name__ == "InterruptProcessingException"
    finally:
        state.interrupted = False


def test_the_node_names_the_download_when_the_files_are_missing(pack):
    node = pack[0].NODE_CLASS_MAPPINGS["EMOEvaluate"]()
    with pytest.raises(FileNotFoundError, match="download metrics --to .*emo"):
        node.evaluate(25.0, frames=frames(120), audio={"waveform": speech_like(4.8)[None], "sample_rate": 16000})
