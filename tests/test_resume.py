"""Long renders resume from the last finished clip (emo_pipeline/render_state.py): killed with SIGKILL at a
known point, started again, they give the frames of an uninterrupted run without redoing finished work."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, decoded_frames, speech_like
from emo_pipeline.io.media import read_video_info

STEPS = 2
CLIPS = 4  # 0.5 s at 25 fps: 13 frames in clips of 4 (the tiny model's)


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    import av
    import numpy as np

    samples = (speech_like(seconds, seed=seed).numpy() * 32767).astype(np.int16).reshape(1, -1)
    with av.open(str(path), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def state_dir(out: Path) -> Path:
    return out.parent / f".{out.stem}.emo-resume"


def counting_backbone(monkeypatch) -> list:
    """Each Backbone call of the models the command line loads in this process, counted."""
    import emo_pipeline.cli.generate as cli

    calls, load = [], cli.load_model

    def load_counted(args):
        pipe = load(args)
        pipe.net.denoising_unet.register_forward_hook(lambda *_: calls.append(1))
        return pipe

    monkeypatch.setattr(cli, "load_model", load_counted)
    return calls


def stop_at(monkeypatch, step: int) -> list:
    """Make the in-process command line stop (as Ctrl-C does) at progress step `step`; returns the steps seen."""
    import emo_pipeline.cli.generate as cli
    from emo_pipeline.cli.stop import STOP

    seen, progress = [], cli._progress

    def stopping(info):
        seen.append(info)
        progress(info)
        if info.step == step:
            STOP["signal"] = signal.SIGINT

    monkeypatch.setattr(cli, "_progress", stopping)
    return seen


def kill_at(step: int, argv: list[str]) -> None:
    """Run the command line in a child, SIGKILL it once it reports progress step `step`."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "render_until.py"), str(step), *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # an event, not a delay: the child says where it is
        lines.append(line)
        if line.strip() == "BLOCKED":
            break
    proc.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(lines) + err


@pytest.fixture(scope="module")
def hallo(tmp_path_factory):
    """The tiny model's uninterrupted render of 0.5 s: its file, frames and Backbone calls."""
    from emo_pipeline.cli import main

    folder = tmp_path_factory.mktemp("hallo")
    argv = ["generate", "--random", "--audio", str(write_wav(folder / "voice.wav", 0.5)), "--steps", str(STEPS)]
    with pytest.MonkeyPatch.context() as mp:
        calls = counting_backbone(mp)
        assert main([*argv, "--out", str(folder / "full.mp4")]) == 0
    assert len(calls) == CLIPS * STEPS
    assert not state_dir(folder / "full.mp4").exists()  # removed once the MP4 is complete
    return {"argv": argv, "folder": folder, "frames": decoded_frames(folder / "full.mp4"), "calls": len(calls)}


def check_complete(out: Path, frames: torch.Tensor, seconds: float) -> None:
    info = read_video_info(out)
    assert info["frame_count"] == len(frames) == round(seconds * 25 + 0.49)  # one frame per audio frame
    assert info["audio_duration"] == pytest.approx(len(frames) / 25, abs=1e-3)  # the whole sound
    assert torch.equal(decoded_frames(out), frames)  # bit-identical to the uninterrupted run
    assert not state_dir(out).exists() and not list(out.parent.glob(".*partial*"))


@pytest.mark.parametrize("clip", [2, CLIPS], ids=["middle clip", "last clip"])
def test_a_killed_render_resumes_with_the_same_frames(hallo, clip, tmp_path, monkeypatch, capsys):
    from emo_pipeline.cli import main

    out = tmp_path / "video.mp4"
    kill_at((clip - 1) * STEPS + 1, [*hallo["argv"], "--out", str(out)])  # during clip `clip`'s steps
    assert not out.exists()
    manifest = json.loads((state_dir(out) / "manifest.json").read_text())
    assert manifest["frames"] == (clip - 1) * 4  # every clip before the killed one is kept
    calls = counting_backbone(monkeypatch)
    assert main([*hallo["argv"], "--out", str(out)]) == 0
    assert f"Resuming: {(clip - 1) * 4} frames already made" in capsys.readouterr().out
    assert len(calls) == (CLIPS - clip + 1) * STEPS  # the kept clips are not sampled again
    check_complete(out, hallo["frames"], 0.5)
    assert out.read_bytes() == (hallo["folder"] / "full.mp4").read_bytes()


@pytest.fixture(scope="module")
def echomimic(tmp_path_factory):
    from emo_pipeline.config import tiny_echomimic_config
    from emo_pipeline.io.loading import convert_checkpoint
    from emo_pipeline.tiny import write_tiny_echomimic_folder

    folder = tmp_path_factory.mktemp("echomimic")
    model = write_tiny_echomimic_folder(folder / "echomimic")
    convert_checkpoint(model, model / "net.safetensors", config=tiny_echomimic_config())
    return folder, model / "net.safetensors"


def test_a_killed_echomimic_render_resumes_midway_through_its_steps(echomimic, tmp_path, monkeypatch, capsys):
    """0.3 s at 24 fps: 8 frames, 3 windows of 4 per step, 4 steps; killed inside step 3."""
    from emo_pipeline.cli import main

    folder, model = echomimic
    argv = ["generate", "--model", str(model), "--audio", str(write_wav(tmp_path / "voice.wav", 0.3)), "--steps", "4",
            "--context-overlap", "1"]
    calls = counting_backbone(monkeypatch)
    assert main([*argv, "--out", str(tmp_path / "full.mp4"), "--no-resume"]) == 0
    assert len(calls) == 12
    out = tmp_path / "video.mp4"
    kill_at(2 * 3 + 2, [*argv, "--out", str(out)])  # the second window of step 3
    manifest = json.loads((state_dir(out) / "manifest.json").read_text())
    assert manifest["frames"] == 0 and manifest["carry"]  # the latents after step 2
    calls.clear()
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 0
    assert "Resuming" in capsys.readouterr().out
    assert len(calls) == 2 * 3  # steps 3 and 4 only
    check_complete_at(out, decoded_frames(tmp_path / "full.mp4"), 24)


def check_complete_at(out: Path, frames: torch.Tensor, fps: int) -> None:
    info = read_video_info(out)
    assert info["frame_count"] == len(frames) and info["fps"] == fps
    assert info["audio_duration"] == pytest.approx(len(frames) / fps, abs=1e-3)
    assert torch.equal(decoded_frames(out), frames)
    assert not state_dir(out).exists()


@pytest.fixture(scope="module")
def kept_state(hallo):
    """A render of the tiny model stopped during clip 2: its state folder (clip 1 kept), to copy."""
    from emo_pipeline.cli import main

    out = hallo["folder"] / "stopped.mp4"
    with pytest.MonkeyPatch.context() as mp:
        stop_at(mp, STEPS + 1)
        assert main([*hallo["argv"], "--out", str(out)]) == 130
    assert json.loads((state_dir(out) / "manifest.json").read_text())["frames"] == 4
    return state_dir(out)


def with_state(kept_state: Path, out: Path) -> Path:
    shutil.copytree(kept_state, state_dir(out))
    return state_dir(out)


@pytest.mark.parametrize("change", ["audio", "image", "seed", "steps"])
def test_a_changed_input_or_setting_starts_afresh(hallo, kept_state, change, tmp_path, monkeypatch, capsys):
    from emo_pipeline.cli import main

    argv = list(hallo["argv"])
    if change == "audio":
        argv[argv.index("--audio") + 1] = str(write_wav(tmp_path / "other.wav", 0.5, seed=1))
    elif change == "image":
        from PIL import Image

        Image.new("RGB", (64, 64), (200, 150, 120)).save(tmp_path / "face.png")
        argv += ["--image", str(tmp_path / "face.png"), "--no-face-crop"]
    elif change == "seed":
        argv += ["--seed", "1"]
    else:
        argv[argv.index("--steps") + 1] = "3"
    out = tmp_path / "video.mp4"
    with_state(kept_state, out)
    seen = stop_at(monkeypatch, 1)  # the first step tells where sampling began
    assert main([*argv, "--out", str(out)]) == 130
    text = capsys.readouterr().out
    assert f"was made with another {change}" in text and "starts afresh" in text
    assert seen[0].clip == 0 and seen[0].step == 1
    assert not (state_dir(out) / "manifest.json").exists()  # the old progress is not reused later


@pytest.mark.parametrize("damage", ["segment byte", "manifest", "carry missing"])
def test_a_damaged_state_is_detected_and_the_render_starts_afresh(hallo, kept_state, damage, tmp_path,
                                                                  monkeypatch):
    from emo_pipeline.cli import main

    out = tmp_path / "video.mp4"
    folder = with_state(kept_state, out)
    if damage == "segment byte":
        segment = sorted(folder.glob("frames_*.mkv"))[0]
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0x40
        segment.write_bytes(bytes(data))
    elif damage == "manifest":
        (folder / "manifest.json").write_text((folder / "manifest.json").read_text()[:40])
    else:
        next(folder.glob("carry_*.pt")).unlink()
    seen = stop_at(monkeypatch, 1)
    with pytest.warns(UserWarning, match="is damaged"):
        assert main([*hallo["argv"], "--out", str(out)]) == 130
    assert seen[0].clip == 0


def test_the_same_inputs_resume_and_no_resume_ignores_the_state(hallo, kept_state, tmp_path, monkeypatch, capsys):
    from emo_pipeline.cli import main

    out = tmp_path / "video.mp4"
    with_state(kept_state, out)
    seen = stop_at(monkeypatch, STEPS + 1)
    assert main([*hallo["argv"], "--out", str(out)]) == 130
    assert seen[0].clip == 1  # clip 1 was kept
    assert f"The progress so far is kept in {state_dir(out)}" in capsys.readouterr().err
    seen.clear()
    assert main([*hallo["argv"], "--out", str(out), "--no-resume"]) == 130
    assert seen[0].clip == 0 and "Resuming" not in capsys.readouterr().out


def test_a_cap_or_a_short_disk_stops_keeping_progress_with_a_plain_message(hallo, tmp_path, monkeypatch, capsys):
    import emo_pipeline.render_state as render_state
    from emo_pipeline.cli import main

    out = tmp_path / "video.mp4"
    stop_at(monkeypatch, STEPS + 1)
    assert main([*hallo["argv"], "--out", str(out), "--resume-cap", "0.000001"]) == 130
    assert "Progress is no longer kept" in (text := capsys.readouterr().out) and "cap of" in text
    assert not state_dir(out).exists()
    real = shutil.disk_usage
    monkeypatch.setattr(render_state.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=render_state.RESERVE_BYTES // 2))
    assert main([*hallo["argv"], "--out", str(out)]) == 130
    assert "the disk is short" in capsys.readouterr().out and not state_dir(out).exists()


def test_a_killed_batch_continues_inside_its_video(hallo, tmp_path, monkeypatch):
    from emo_pipeline.cli import main

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"audio": str(hallo["folder"] / "voice.wav"), "out": "v.mp4", "random": True,
                                "steps": STEPS}) + "\n")
    out = tmp_path / "renders" / "v.mp4"
    kill_at(2 * STEPS + 1, ["batch", str(jobs), "--out-dir", str(tmp_path / "renders")])  # during clip 3
    calls = counting_backbone(monkeypatch)
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "renders")]) == 0
    assert len(calls) == 2 * STEPS
    check_complete(out, hallo["frames"], 0.5)


def test_memo_resumes_with_the_same_frames(tmp_path):
    """MEMO's temporal memory of every past clip carries over: stopped after clip 2 of 3, the rest equals
    the uninterrupted run (the engine through RenderState, as the command line and the node use it)."""
    from emo_pipeline.config import tiny_memo_config
    from emo_pipeline.render_state import RenderState, fingerprint, resumed_frames
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.sampling.steps import Callbacks, SamplingOptions
    from emo_pipeline.tiny import tiny_components

    pipe = EMOPipeline(*tiny_components(tiny_memo_config()))
    portrait = pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)),
                                     face_box=(0.25, 0.2, 0.75, 0.8))
    options = SamplingOptions(seed=3, steps=2, frames_per_clip=4)
    audio = pipe.encode_audio(speech_like(0.4), 16000, fps=25, clip_length=4)  # 10 frames: 3 clips
    full = torch.cat(list(resumed_frames(None, pipe.iter_clips(portrait, audio, options))))

    def render(stop_after_step=None):
        state = RenderState(tmp_path / "state", fingerprint(pipe, portrait, audio, options), say=lambda _: None)

        def on_step(info):
            if info.step == stop_after_step:
                raise KeyboardInterrupt()

        opts = SamplingOptions(seed=3, steps=2, frames_per_clip=4, callbacks=Callbacks(on_step=on_step),
                               checkpoint=state)
        got = []
        for frames in resumed_frames(state, pipe.iter_clips(portrait, audio, opts)):
            got.append(frames)
        state.finish()
        return torch.cat(got)

    with pytest.raises(KeyboardInterrupt):
        render(stop_after_step=2 * 2 + 1)  # inside clip 3
    saved = torch.load(next((tmp_path / "state").glob("carry_*.pt")), weights_only=True)
    assert saved["clip"] == 2 and saved["memory"] is not None
    assert torch.equal(render(), full)
    assert not (tmp_path / "state").exists()
