"""`python -m emo_pipeline`: the README's main command and `inspect`, on real files."""

import math
import os
import signal
import sys
import time

import pytest
import torch

from conftest import ROOT, WatchedProcess, decoded_frames, machine_slowness, speech_like
from emo_pipeline.cli import main
from emo_pipeline.io.loading import save_net
from emo_pipeline.io.media import read_video_info, write_video
from emo_pipeline.tiny import tiny_net


def test_default_generate_writes_a_video_and_says_it_is_random(tmp_path):
    out = tmp_path / "demo.mp4"
    # no overall time limit: it fails only when no progress line comes for a (machine-scaled) while
    with WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--random", "--out", str(out),
                         "--steps", "2"], cwd=ROOT) as run:
        code, printed, err = run.finish()
    assert code == 0, err
    assert "RANDOM-WEIGHT" in printed and "clip 25/25" in printed
    info = read_video_info(out)
    assert info["frame_count"] == 100 and abs(info["audio_duration"] - 4.0) < 1e-3


def test_the_main_command_gives_the_same_video_in_every_process(tmp_path):
    """Same seed, inputs and model in two processes: identical decoded frames, indeed an identical file. The two
    run at once, each told to use one thread (one by --threads, one by EMO_THREADS): with torch's default every
    process takes every core, and two such renders on two cores took minutes instead of seconds."""
    outs = [tmp_path / "demo1.mp4", tmp_path / "demo2.mp4"]
    told = [(["--threads", "1"], {}), ([], {"EMO_THREADS": "1"})]
    runs = [WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--out", str(out), "--steps", "2", *flags],
                           cwd=ROOT, env={**os.environ, **env}) for out, (flags, env) in zip(outs, told)]
    lines = []
    for run in runs:
        with run:
            code, printed, err = run.finish()
        assert code == 0, err
        lines.append(next(line for line in printed.splitlines() if line.startswith("Generating ")))
    if torch.cuda.is_available():  # the device auto picks: the CPU threads are neither set nor said
        assert all(" on cuda" in line and "thread" not in line for line in lines), lines
    else:
        assert "on cpu, 1 thread (--threads) ..." in lines[0] and "on cpu, 1 thread (EMO_THREADS=1) ..." in lines[1]
    first, second = (decoded_frames(out) for out in outs)
    assert first.shape == (100, 64, 64, 3)
    assert torch.equal(first, second)
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_generate_from_files(tmp_path, capsys):
    from PIL import Image
    import numpy as np

    Image.fromarray((np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    # The driving audio comes from a video file's sound track, at 44.1 kHz stereo.
    write_video(tmp_path / "src.mp4", torch.rand(10, 16, 16, 3), 25, audio=(speech_like(0.4, 44100, 2), 44100))
    out = tmp_path / "o.mp4"
    code = main(["generate", "--random", "--image", str(tmp_path / "p.png"), "--audio", str(tmp_path / "src.mp4"),
                 "--out", str(out), "--steps", "1", "--fps", "30"])
    assert code == 0
    info = read_video_info(out)
    assert info["frame_count"] == 12 and info["fps"] == 30  # ceil(0.4 s · 30)


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["generate", "--random", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--image" in (err := capsys.readouterr().err) and "missing.png: no such file" in err
    assert not (tmp_path / "x.mp4").exists()
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    assert main(["inspect", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err  # text where weights belong is named as such (issue 22), in one line
    assert "is a text file" in err and "not a safetensors weights file" in err and "Traceback" not in err


def test_inspect(tmp_path, capsys):
    path = save_net(tiny_net(), tmp_path / "net.safetensors")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "config 'tiny'" in text and "all keys match" in text and "reference_unet" in text
    assert main(["inspect", str(tmp_path)]) == 0  # the model folder works as well as its file
    assert "config 'tiny'" in capsys.readouterr().out


def test_convert_refuses_a_target_that_is_not_safetensors(tmp_path, capsys):
    save_net(tiny_net(), tmp_path / "net.safetensors")
    assert main(["convert", str(tmp_path), str(tmp_path / "out.pth")]) == 2
    assert "out.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()
    assert main(["convert", str(tmp_path), str(tmp_path / "half.safetensors"), "--dtype", "fp16"]) == 0
    assert "all keys match" in capsys.readouterr().out


def test_generate_crops_to_the_face_and_pastes_back(tmp_path):
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()[:, :400]).save(tmp_path / "photo.png")  # 400×512, not square
    out = tmp_path / "o.mp4"
    assert main(["generate", "--random", "--image", str(tmp_path / "photo.png"), "--out", str(out), "--steps", "1",
                 "--paste-back"]) == 0
    info = read_video_info(out)
    assert (info["width"], info["height"]) == (400, 512) and info["frame_count"] == 100


DEMO = ROOT / "models" / "demo"


@pytest.mark.skipif(not (DEMO / "net.safetensors").is_file(), reason="the demo model is not bundled in this checkout")
def test_bundled_demo_model_is_small_and_the_default(tmp_path):
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 30 * 2**20
    from emo_pipeline.io.loading import load_net

    net = load_net(DEMO / "net.safetensors")
    assert net.config.has_speed_layers and net.config.name == "demo"
    out = tmp_path / "demo.mp4"
    with WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--out", str(out), "--steps", "2"],
                        cwd=ROOT) as run:
        code, printed, err = run.finish()
    assert code == 0, err
    assert "bundled demo model" in printed and "not photographs" in printed.replace("\n", " ")
    assert read_video_info(out)["frame_count"] == 100


def test_echomimic_convert_inspect_and_generate(tmp_path, capsys):
    """EchoMimic's download layout → `convert` (our file, its tiny config recorded) → `inspect` →
    `generate` at its own 24 fps, with whisper_tiny.pt and the VAE found beside the file."""
    from emo_pipeline.config import tiny_echomimic_config
    from emo_pipeline.io.loading import convert_checkpoint
    from emo_pipeline.tiny import write_tiny_echomimic_folder

    folder = write_tiny_echomimic_folder(tmp_path / "echomimic")
    convert_checkpoint(folder, folder / "net.safetensors", config=tiny_echomimic_config())  # tiny: no auto-detection
    assert main(["inspect", str(folder / "net.safetensors")]) == 0
    assert "EchoMimic family" in capsys.readouterr().out
    write_video(tmp_path / "voice.mp4", torch.zeros(10, 64, 64, 3), 25, audio=(speech_like(0.3), 16000))
    out = tmp_path / "echo.mp4"
    assert main(["generate", "--model", str(folder / "net.safetensors"), "--audio", str(tmp_path / "voice.mp4"),
                 "--out", str(out), "--steps", "2", "--context-overlap", "1"]) == 0
    printed = capsys.readouterr().out
    assert "step 2/2  window" in printed
    assert printed.count("Generating ") == 1  # said once (it was printed twice before and after the resume check)
    info = read_video_info(out)
    seconds = read_video_info(tmp_path / "voice.mp4")["audio_duration"]
    assert info["fps"] == 24 and info["frame_count"] == math.ceil(seconds * 24 - 1e-6)  # one frame per audio frame


def test_generate_checks_paths_before_loading_anything(tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    assert main(["generate", "--random", "--audio", str(missing), "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr()
    assert "--audio" in err.err and "missing.wav" in err.err and "No --image given" not in err.out
    assert main(["generate", "--random", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["generate", "--random", "--out", str(tmp_path / "v.avi")]) == 2
    assert "v.mp4" in capsys.readouterr().err
    assert not list(tmp_path.glob("*partial*"))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_leaves_no_files(tmp_path, sig, code):
    out = tmp_path / "stopped.mp4"
    # PyAV creates the file with the first frames written: wait for clip 1's line, then for the partial file
    # (the events), and stop it with 24 clips to go
    # --no-resume: by default a stopped render keeps its finished clips (tests/test_resume.py)
    with WatchedProcess([sys.executable, "-u", "-m", "emo_pipeline", "generate", "--random", "--steps", "20",
                         "--no-resume", "--out", str(out)], cwd=ROOT) as run:
        assert run.wait_for(lambda line: line.startswith("  clip 1/25")), run.lines
        bound = time.monotonic() + 120 * machine_slowness()
        while not list(tmp_path.glob(".*partial*")):
            assert time.monotonic() < bound and run.proc.poll() is None, run.lines
            time.sleep(0.05)
        run.proc.send_signal(sig)
        code_seen, _, err = run.finish()
    assert code_seen == code, err
    assert "no output written" in err
    assert list(tmp_path.iterdir()) == []


def test_a_stop_that_python_swallows_still_stops_sampling(tmp_path, monkeypatch, capsys):
    """A signal whose exception lands in a __del__ or weakref callback is only printed by Python; the
    recorded signal still stops sampling at the next step, and nothing is written."""
    import emo_pipeline.cli.generate as cli
    from emo_pipeline.cli.stop import STOP

    steps = []

    def swallowed(info):  # as if SIGINT had arrived inside a finaliser during the first step
        steps.append(info.step)
        STOP["signal"] = signal.SIGINT

    monkeypatch.setattr(cli, "_progress", swallowed)
    out = tmp_path / "o.mp4"
    assert main(["generate", "--random", "--steps", "50", "--out", str(out)]) == 130
    assert steps == [1] and "interrupted: no output written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_as_audio_or_image_is_named_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "voices").mkdir()
    assert main(["generate", "--random", "--audio", str(tmp_path / "voices"), "--out", str(tmp_path / "a.mp4")]) == 2
    out, err = capsys.readouterr()
    assert f"--audio {tmp_path / 'voices'} is a folder: give a file, such as" in err, err
    assert "No --model given" not in out and "not found" not in err
    assert main(["generate", "--random", "--image", str(tmp_path / "voices"), "--out", str(tmp_path / "a.mp4")]) == 2
    assert "--image" in (err := capsys.readouterr().err) and "is a folder" in err


def test_weights_files_that_are_not_weights_are_called_what_they_are(tmp_path, capsys):
    """A text file given as --wav2vec is a text file (not a malicious pickle); the whisper loader refuses a
    pickle carrying code as such (not 'incomplete or damaged')."""
    from emo_pipeline.audio.whisper import WhisperAudioEncoder
    from emo_pipeline.io.loading import CheckpointError
    from emo_pipeline.tiny import write_tiny_model_folder

    write_tiny_model_folder(tmp_path / "models")
    notes = tmp_path / "wav2vec.pth"
    notes.write_text("copy the wav2vec2 weights here\nthen run generate\n")  # 'c' is pickle's GLOBAL opcode
    assert main(["generate", "--model", str(tmp_path / "models" / "tiny"), "--wav2vec", str(notes),
                 "--out", str(tmp_path / "o.mp4"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a text file (it begins \"copy the wav2vec2 weights here\")" in err and "carries code" not in err, err
    pointer = tmp_path / "wav2vec.safetensors"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 377667514\n")
    assert main(["generate", "--model", str(tmp_path / "models" / "tiny"), "--wav2vec", str(pointer),
                 "--out", str(tmp_path / "o.mp4"), "--steps", "1"]) == 2
    assert "is a Git LFS pointer, not the weights" in capsys.readouterr().err

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"dims": {}, "model_state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="Refused .*tiny.pt: it is a pickle that carries code") as err:
        WhisperAudioEncoder.from_file(tmp_path / "tiny.pt")
    assert "incomplete or damaged" not in str(err.value)
    assert not (tmp_path / "o.mp4").exists()
