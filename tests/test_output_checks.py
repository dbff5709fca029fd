"""Checks made before any model loads (emo_pipeline/cli/output_checks.py): an output folder that cannot be written,
a path below a regular file, a name too long for the file system, a device this torch does not have, an option out
of range: each a plain message naming the option and the fix, with nothing loaded first and no traceback."""

from __future__ import annotations

import json

import pytest
import torch

from test_download import _mount_tmpfs, _unmount


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fails the test if a command gets as far as loading a model."""
    import emo_pipeline.cli.generate as generate
    import emo_pipeline.cli.upscale as upscale
    import emo_pipeline.io.model_files as model_files

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(generate, "load_model", loaded)
    monkeypatch.setattr(upscale, "load_upscaler", loaded)
    monkeypatch.setattr(model_files, "find_net", loaded)


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "locked"
    _mount_tmpfs(folder, "1m", read_only=True)
    yield folder
    _unmount(folder)


def _fails(argv: list[str], capsys, *expected: str) -> str:
    from emo_pipeline.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def video(tmp_path):
    from emo_pipeline.io.media import write_video

    path = tmp_path / "face.mp4"
    write_video(path, torch.rand(4, 32, 32, 3), 25)
    return path


def test_batch_into_a_read_only_folder(read_only, tmp_path, nothing_loads, capsys):
    from test_batch import write_wav

    jobs = tmp_path / "jobs.jsonl"
    audio = write_wav(tmp_path / "a.wav", 0.2)
    jobs.write_text(json.dumps({"audio": str(audio), "out": "v.mp4", "random": True}) + "\n")
    _fails(["batch", str(jobs), "--out-dir", str(read_only / "renders")], capsys,
           "--out-dir: cannot write in", "read-only")


def test_convert_into_a_read_only_folder_says_so_before_loading(read_only, tmp_path, nothing_loads, capsys):
    _fails(["convert", str(tmp_path / "net.pth"), str(read_only / "net.safetensors")], capsys,
           "convert's target: cannot write in", "read-only")


def test_upscale_into_a_read_only_folder_says_so_before_loading(read_only, video, nothing_loads, capsys):
    _fails(["upscale", str(video), "--out", str(read_only / "x2.mp4"), "--random"], capsys,
           "--out: cannot write in", "read-only")


def test_generate_below_a_regular_file(tmp_path, nothing_loads, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    _fails(["generate", "--out", str(tmp_path / "notes.txt" / "video.mp4")], capsys, "notes.txt is a file")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_out_name_too_long_for_the_file_system(tmp_path, nothing_loads, capsys):
    name = "v" * 240 + ".mp4"  # fits alone (244 bytes), not with the resume folder's and partial file's names
    _fails(["generate", "--out", str(tmp_path / name)], capsys, "--out: the name is too long", "shorter name")


@pytest.mark.parametrize("device,expected", [
    ("bogus", "--device 'bogus' is not a device: use cpu, cuda"),
    ("cuda", "--device cuda: "),
    ("cuda:7", "--device cuda:7: "),
])
def test_a_device_this_torch_has_not(device, expected, tmp_path, nothing_loads, capsys):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    err = _fails(["generate", "--device", device, "--out", str(tmp_path / "v.mp4")], capsys, expected)
    if device.startswith("cuda"):
        assert "Use --device cpu" in err


def test_upscale_crf_out_of_range(video, tmp_path, nothing_loads, capsys):
    _fails(["upscale", str(video), "--out", str(tmp_path / "x2.mp4"), "--random", "--crf", "-5"], capsys,
           "--crf -5: H.264's quality runs from 0 (lossless) to 51")
