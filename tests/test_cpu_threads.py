"""CPU threads per render (emo_pipeline/cpu_threads.py): the cores this process may use, split among the
processes sharing them, unless --threads or EMO_THREADS says; said in the line that names the device."""

import json
import os

import pytest
import torch

from conftest import speech_like
from emo_pipeline import cpu_threads
from emo_pipeline.cli import main
from emo_pipeline.cpu_threads import decide_threads, set_cpu_threads, usable_cores
from emo_pipeline.io.media import write_video


def test_the_cores_are_the_affinity_capped_by_a_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    absent = tmp_path / "absent"
    assert usable_cores(absent) == 3
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 cores: two threads may run, the quota throttles the second half
    assert usable_cores(quota) == 2
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores(absent) == 6


@pytest.mark.parametrize("cores,environ,sharing,threads", [
    (8, {}, None, 8),  # alone: every core it may use
    (8, {"LOCAL_WORLD_SIZE": "2"}, None, 4),  # torchrun / accelerate launch: the local processes split them
    (8, {"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, None, 2),  # an MPI launcher
    (8, {}, 3, 2),  # batch's processes, as the caller counts them
    (8, {"LOCAL_WORLD_SIZE": "2"}, 8, 4),  # the launcher's count of this machine's processes wins
    (2, {"LOCAL_WORLD_SIZE": "4"}, None, 1),  # never fewer than one
])
def test_the_cores_are_split_among_the_processes_sharing_them(cores, environ, sharing, threads):
    choice = decide_threads(None, cores=cores, sharing=sharing, environ=environ)
    assert (choice.threads, choice.source) == (threads, "cores")


def test_threads_or_emo_threads_override_the_split():
    both = {"LOCAL_WORLD_SIZE": "2", "EMO_THREADS": "3"}
    assert decide_threads(None, cores=8, environ=both).threads == 3
    assert decide_threads(5, cores=8, environ=both).threads == 5  # the flag wins over the variable
    assert decide_threads(None, cores=8, environ={"EMO_THREADS": " "}).source == "cores"  # empty: unset


@pytest.mark.parametrize("requested,environ,named", [
    (0, {}, "--threads 0"), (-2, {}, "--threads -2"), (9, {}, "--threads 9"),
    (None, {"EMO_THREADS": "0"}, "EMO_THREADS 0"), (None, {"EMO_THREADS": "two"}, "EMO_THREADS='two'"),
    (None, {"EMO_THREADS": "1.5"}, "EMO_THREADS='1.5'"),
])
def test_a_bad_thread_count_is_named_with_its_fix(requested, environ, named):
    with pytest.raises(ValueError) as err:
        decide_threads(requested, cores=8, environ=environ)
    text = str(err.value)
    assert text.startswith(named) and "1 to 8" in text and "\n" not in text


def test_the_choice_is_said_as_it_was_made():
    assert decide_threads(None, cores=2, environ={"LOCAL_WORLD_SIZE": "2"}).describe() == \
        "1 thread (2 cores shared by 2 processes; --threads to change)"
    assert decide_threads(None, cores=4, environ={}).describe() == "4 threads (4 cores; --threads to change)"
    assert decide_threads(2, cores=4, environ={}).describe() == "2 threads (--threads)"
    assert decide_threads(None, cores=4, environ={"EMO_THREADS": "1"}).describe() == "1 thread (EMO_THREADS=1)"


def test_threads_are_set_on_the_cpu_only(monkeypatch):
    monkeypatch.delenv("EMO_THREADS", raising=False)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 or usable_cores() == 1 else 2
    try:
        assert set_cpu_threads("cuda", wanted) is None and torch.get_num_threads() == before
        assert set_cpu_threads("cpu", wanted).threads == wanted and torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="--threads 0"):  # bad input is bad on every device
        set_cpu_threads("cuda", 0)


@pytest.fixture
def voice(tmp_path):
    write_video(tmp_path / "voice.mp4", torch.zeros(4, 16, 16, 3), 25, audio=(speech_like(0.16), 16000))
    return tmp_path / "voice.mp4"


def test_the_line_naming_the_device_says_the_threads(tmp_path, voice, monkeypatch, capsys):
    monkeypatch.delenv("EMO_THREADS", raising=False)
    before = torch.get_num_threads()
    args = ["generate", "--random", "--device", "cpu", "--audio", str(voice), "--steps", "1", "--no-resume"]
    assert main([*args, "--out", str(tmp_path / "a.mp4"), "--threads", "1"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("Generating "))
    assert line.endswith(" on cpu, 1 thread (--threads) ..."), line
    assert torch.get_num_threads() == before  # the caller's threads are given back
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert main([*args, "--out", str(tmp_path / "b.mp4")]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("Generating "))
    assert line.endswith(" on cpu, 1 thread (3 cores shared by 3 processes; --threads to change) ..."), line


def test_bad_threads_are_one_line_errors_before_anything_loads(tmp_path, voice, monkeypatch, capsys):
    monkeypatch.delenv("EMO_THREADS", raising=False)
    cores = usable_cores()
    assert main(["generate", "--random", "--threads", "0", "--out", str(tmp_path / "a.mp4")]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"error: --threads 0: give 1 to {cores} (the cores this process may use), or leave it " \
                          f"out to split them among the processes ({cores} each now)."
    assert "No --image" not in out and not (tmp_path / "a.mp4").exists()
    monkeypatch.setenv("EMO_THREADS", "many")
    assert main(["generate", "--random", "--out", str(tmp_path / "a.mp4")]) == 2
    assert capsys.readouterr().err.startswith("error: EMO_THREADS='many': give a whole number")
    monkeypatch.delenv("EMO_THREADS")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"audio": str(voice), "out": "a.mp4", "random": True, "steps": 1}) + "\n")
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "renders"), "--threads", str(cores + 1)]) == 2
    assert f"--threads {cores + 1}: give 1 to {cores}" in capsys.readouterr().err
    assert not (tmp_path / "renders" / "a.mp4").exists()
    assert main(["upscale", str(voice), "--out", str(tmp_path / "up.mp4"), "--random", "--threads", "-1"]) == 2
    assert "--threads -1: give 1 to" in capsys.readouterr().err and not (tmp_path / "up.mp4").exists()


def test_a_batch_job_cannot_set_the_threads(tmp_path, voice, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"audio": str(voice), "out": "a.mp4", "threads": 1}) + "\n")
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "renders")]) == 2
    assert "unknown option(s) threads" in capsys.readouterr().err  # the process's, given as batch --threads
