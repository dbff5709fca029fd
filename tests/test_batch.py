"""`python -m emo_pipeline batch`: jobs checked up front, split over processes by audio length,
resumable, failures recorded while the rest go on."""

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, WatchedProcess, machine_slowness, speech_like
from emo_pipeline.cli import main
from emo_pipeline.cli.batch import Job, assign, read_jobs
from emo_pipeline.cli.parser import generate_defaults
from emo_pipeline.io.media import read_video_info, write_video


def write_wav(path: Path, seconds: float) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((speech_like(seconds).numpy() * 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = 16000
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def write_jobs(folder: Path, lines: list) -> Path:
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def results(out_dir: Path) -> list[dict]:
    path = out_dir / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("processes", [2, 3])
def test_jobs_are_balanced_by_audio_length(processes):
    seconds = [61.0, 3.0, 45.5, 2.0, 30.0, 29.0, 8.0, 1.0, 12.0, 90.0, 4.0]
    jobs = [Job(line=i + 1, out=Path(f"{i}.mp4"), seconds=s) for i, s in enumerate(seconds)]
    shares = assign(jobs, processes)
    assert sorted(j.line for share in shares for j in share) == [j.line for j in jobs]  # each exactly once
    totals = [sum(j.seconds for j in share) for share in shares]
    assert max(totals) - min(totals) <= max(seconds)
    assert assign(list(reversed(jobs)), processes) == shares  # every process computes the same split
    by_count = [jobs[r::processes] for r in range(processes)]  # what splitting by count would give
    spread = [sum(j.seconds for j in share) for share in by_count]
    assert max(totals) - min(totals) < max(spread) - min(spread)


def test_bad_lines_are_named_before_anything_runs(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.2)
    jobs = write_jobs(tmp_path, [
        {"audio": "a.wav", "out": "a.mp4"},
        "{not json",
        {"audio": "a.wav", "out": "b.mp4", "speed": 2},
        {"audio": "missing.wav", "out": "c.mp4"},
        {"audio": "a.wav", "out": "a.mp4"},
        {"out": "d.mp4"},
    ])
    with pytest.raises(ValueError) as err:
        read_jobs(jobs, tmp_path / "out", generate_defaults())
    text = str(err.value)
    for expected in ("line 2: not JSON", "line 3: unknown option(s) speed", "line 4: audio", "missing.wav: no such file",
                     "line 5: out a.mp4 is also line 1's", "line 6: missing audio"):
        assert expected in text, text
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "out")]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_relative_paths_and_options(tmp_path):
    (tmp_path / "voices").mkdir()
    write_wav(tmp_path / "voices" / "a.wav", 0.5)
    jobs = read_jobs(write_jobs(tmp_path, [{"audio": "voices/a.wav", "out": "x/a.mp4", "seed": 3, "paste-back": True}]),
                     tmp_path / "out", generate_defaults())
    assert jobs[0].options["audio"] == str(tmp_path / "voices" / "a.wav")
    assert jobs[0].out == tmp_path / "out" / "x" / "a.mp4"
    assert jobs[0].options["seed"] == 3 and jobs[0].options["paste_back"] is True and jobs[0].options["steps"] is None
    assert jobs[0].seconds == pytest.approx(0.5, abs=1e-3)


def launch(jobs: Path, out_dir: Path, processes: int) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
         "127.0.0.1", "--master_port", str(port), "-m", "emo_pipeline", "batch", str(jobs), "--out-dir",
         str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=900 * machine_slowness())


def test_two_processes_render_each_job_once_and_record_the_bad_one(tmp_path):
    seconds = [0.9, 0.3, 0.6, 0.5]
    lines = [{"audio": str(write_wav(tmp_path / f"v{i}.wav", s)), "out": f"v{i}.mp4", "random": True, "steps": 1}
             for i, s in enumerate(seconds)]
    (tmp_path / "broken.wav").write_text("not audio at all")
    lines.insert(2, {"audio": "broken.wav", "out": "broken.mp4", "random": True, "steps": 1})
    jobs, out_dir = write_jobs(tmp_path, lines), tmp_path / "renders"
    first = launch(jobs, out_dir, 2)
    assert first.returncode != 0  # a job failed
    records = results(out_dir)
    assert sorted(r["line"] for r in records) == [1, 2, 3, 4, 5]  # each job once: no duplicate work
    assert {r["process"] for r in records} == {0, 1}  # both processes worked
    errors = [r for r in records if r["status"] == "error"]
    assert [r["line"] for r in errors] == [3] and "broken.wav" in errors[0]["error"]
    for i, s in enumerate(seconds):
        info = read_video_info(out_dir / f"v{i}.mp4")
        assert info["frame_count"] == -(-round(s * 1000) * 25 // 1000)  # one frame per audio frame
    assert not list(out_dir.glob("*.partial.mp4"))
    # A rerun renders nothing that is done: the four are skipped, the broken one fails again (and is
    # recorded again), so the exit code still says a job failed.
    second = launch(jobs, out_dir, 2)
    assert second.returncode != 0
    rerun = results(out_dir)[len(records):]
    assert sorted((r["line"], r["status"]) for r in rerun) == [(1, "skipped"), (2, "skipped"), (3, "error"),
                                                                (4, "skipped"), (5, "skipped")]


def test_a_stopped_batch_resumes_where_it_was(tmp_path):
    lines = [{"audio": str(write_wav(tmp_path / f"v{i}.wav", 0.6)), "out": f"v{i}.mp4", "random": True,
              "steps": 25} for i in range(3)]
    jobs, out_dir = write_jobs(tmp_path, lines), tmp_path / "renders"
    # waits on the events, not the clock: the first job's progress line, then the second job's sampling
    with WatchedProcess([sys.executable, "-u", "-m", "emo_pipeline", "batch", str(jobs), "--out-dir", str(out_dir)],
                        cwd=ROOT) as run:
        assert run.wait_for(lambda line: "(line 1): done" in line), run.lines
        assert run.wait_for(lambda line: line.startswith("  clip 1/")), run.lines
        run.proc.send_signal(signal.SIGINT)
        code, _, err = run.finish()
    assert code == 130, err
    finished = [r["line"] for r in results(out_dir) if r["status"] == "done"]
    assert 1 <= len(finished) < 3
    assert not list(out_dir.glob(".*partial*")) and sorted(p.name for p in out_dir.glob("*.mp4")) == \
        [f"v{line - 1}.mp4" for line in finished]
    assert main(["batch", str(jobs), "--out-dir", str(out_dir)]) == 0
    rerun = results(out_dir)[len(finished):]
    assert sorted(r["line"] for r in rerun if r["status"] == "skipped") == finished  # not redone
    assert sorted(r["line"] for r in rerun if r["status"] == "done") == sorted(set([1, 2, 3]) - set(finished))
    for i in range(3):
        assert read_video_info(out_dir / f"v{i}.mp4")["frame_count"] == 15


def test_one_model_load_and_one_portrait_preparation_per_photo(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    import emo_pipeline.cli.generate as cli
    from emo_pipeline.pipeline import EMOPipeline

    Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    lines = [{"image": "p.png", "audio": str(write_wav(tmp_path / f"v{i}.wav", 0.2)), "out": f"v{i}.mp4",
              "random": True, "steps": 1} for i in range(3)]
    loads, preparations = [], []
    load, prepare = cli.load_model, EMOPipeline.prepare_portrait
    monkeypatch.setattr(cli, "load_model", lambda args: loads.append(1) or load(args))
    monkeypatch.setattr(EMOPipeline, "prepare_portrait", lambda self, *a, **k: preparations.append(1) or prepare(self, *a, **k))
    assert main(["batch", str(write_jobs(tmp_path, lines)), "--out-dir", str(tmp_path / "out")]) == 0
    assert len(loads) == 1 and len(preparations) == 1
    assert "overall 3/3 videos written" in capsys.readouterr().out


def test_outputs_outside_the_out_dir_are_refused_by_line_before_anything_runs(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.2)
    out_dir, elsewhere = tmp_path / "renders", tmp_path / "elsewhere"
    (out_dir / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (out_dir / "link").symlink_to(elsewhere, target_is_directory=True)  # a folder inside that leads out
    jobs = write_jobs(tmp_path, [
        {"audio": "a.wav", "out": "sub/../fine.mp4", "random": True, "steps": 1},
        {"audio": "a.wav", "out": "../../x.mp4", "random": True, "steps": 1},
        {"audio": "a.wav", "out": str(elsewhere / "abs.mp4"), "random": True, "steps": 1},
        {"audio": "a.wav", "out": "link/y.mp4", "random": True, "steps": 1},
    ])
    with pytest.raises(ValueError) as err:
        read_jobs(jobs, out_dir, generate_defaults())
    text = str(err.value)
    for line in (2, 3, 4):
        assert f"line {line}: out " in text and "is outside --out-dir" in text, text
    assert "line 1" not in text  # `sub/../fine.mp4` stays inside
    assert main(["batch", str(jobs), "--out-dir", str(out_dir)]) == 2
    assert "line 2: out \"../../x.mp4\" is outside --out-dir" in capsys.readouterr().err
    assert not list(tmp_path.parent.glob("*.mp4")) and not list(tmp_path.rglob("*.mp4"))  # nothing rendered
    assert not (out_dir / "results.jsonl").exists()


def test_option_values_are_type_checked(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.2)
    jobs = write_jobs(tmp_path, [
        {"audio": "a.wav", "out": 5},
        {"audio": "a.wav", "out": "b.mp4", "seed": "7", "steps": 2.5},
        {"audio": "a.wav", "out": "c.mp4", "paste_back": "yes", "scheduler": "fastest"},
        {"audio": ["a.wav"], "out": "d.mp4", "guidance_interval": [0]},
        {"audio": "a.wav", "out": "e.mp4", "cfg": 4, "guidance_interval": [0, 0.5], "seed": None, "low_vram": False},
    ])
    with pytest.raises(ValueError) as err:
        read_jobs(jobs, tmp_path / "out", generate_defaults())
    text = str(err.value)
    for expected in ("line 1: out must be a string, not 5", "line 2: seed must be a whole number, not \"7\"",
                     "steps must be a whole number, not 2.5", "line 3: paste_back is true or false, not \"yes\"",
                     "scheduler is one of ddim", "line 4: audio must be a string, not ['a.wav']",
                     "guidance_interval is a list of 2 values"):
        assert expected in text, text
    assert "line 5" not in text  # an int where a float belongs, a pair, null for the default, false for a flag
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "out")]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_overlong_line_is_refused_without_being_read_whole_or_echoed(tmp_path):
    write_wav(tmp_path / "a.wav", 0.2)
    jobs = tmp_path / "jobs.jsonl"
    with open(jobs, "w") as f:  # a 100 MB line between two good ones
        f.write(json.dumps({"audio": "a.wav", "out": "a.mp4"}) + "\n")
        f.write('{"audio": "a.wav", "out": "' + "x" * (100 << 20) + '.mp4"}\n')
        f.write(json.dumps({"audio": "a.wav", "out": "b.mp4", "seed": "one"}) + "\n")
    child = ("import resource, sys\nfrom emo_pipeline.cli import main\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             f"code = main(['batch', {str(jobs)!r}, '--out-dir', {str(tmp_path / 'out')!r}])\n"
             "print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    result = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True,
                            timeout=600 * machine_slowness())
    code, grown_kib = map(int, result.stdout.split()[-2:])
    assert code == 2
    assert "line 2: longer than 64 KiB, not read" in result.stderr and "line 3: seed" in result.stderr
    assert len(result.stderr) < 2000 and "xxxx" not in result.stderr  # the long name is not echoed
    assert grown_kib < 50 * 1024  # read in 64 KiB pieces: the 100 MB line is never held
    assert not (tmp_path / "out").exists()
