"""A full disk: a plain error naming the folder, the space free and the space needed; the partial file
removed, the files already there untouched. The disk is a real 1 MiB tmpfs (mounted as root)."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, machine_slowness
from emo_pipeline.cli import main


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, almost filled by a file written before (kept to check that it is untouched)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a 1 MiB tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        earlier = folder / "earlier.mp4"
        earlier.write_bytes(os.urandom(1_000_000))
        yield folder, earlier.read_bytes()
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_generate_on_a_full_disk_says_so_and_keeps_what_was_there(small_disk, capsys):
    folder, earlier = small_disk
    out = folder / "video.mp4"
    assert main(["generate", "--random", "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"No space left in {folder} for the video video.mp4: it needs about" in err and "MiB are free" in err, err
    assert (folder / "earlier.mp4").read_bytes() == earlier
    assert sorted(p.name for p in folder.iterdir()) == ["earlier.mp4"]  # no partial file left


def test_convert_onto_a_full_disk_is_refused_before_writing(small_disk, tmp_path, capsys):
    from emo_pipeline.io.loading import save_net
    from emo_pipeline.tiny import tiny_net

    folder, earlier = small_disk
    source = save_net(tiny_net(), tmp_path / "net.safetensors")
    assert main(["convert", str(source), str(folder / "half.safetensors"), "--dtype", "fp16"]) == 2
    err = capsys.readouterr().err
    needed = source.stat().st_size / 2 / 2**20  # fp16: about half the fp32 source
    assert f"No space left in {folder} for half.safetensors: it needs about" in err, err
    assert abs(float(err.split("needs about ")[1].split(" MiB")[0]) - needed) < 0.5
    assert sorted(p.name for p in folder.iterdir()) == ["earlier.mp4"] and (folder / "earlier.mp4").read_bytes() == earlier


def test_a_batch_stops_plainly_when_the_disk_fills(small_disk, tmp_path):
    from test_batch import write_jobs, write_wav

    folder, earlier = small_disk
    jobs = write_jobs(tmp_path, [{"audio": str(write_wav(tmp_path / f"v{i}.wav", 1.0)), "out": f"v{i}.mp4",
                                  "random": True, "steps": 1} for i in range(2)])
    result = subprocess.run([sys.executable, "-m", "emo_pipeline", "batch", str(jobs), "--out-dir", str(folder)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900 * machine_slowness())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"No space left in {folder}" in result.stderr
    assert (folder / "earlier.mp4").read_bytes() == earlier and not list(folder.glob(".*partial*"))
