"""`python -m emo_pipeline benchmark` on the CPU: the markdown and JSON it writes, checked against the
JSON's own fields and an independent count, and an impossible budget that makes it run fewer steps."""

import json
import math
import os
import sys

import pytest
import torch
from conftest import ROOT, WatchedProcess

ENVIRONMENT = ("torch", "python", "machine", "cpu", "threads", "cores", "load_average", "attention", "fp8",
               "family", "size", "precision")


def benchmark(tmp_path, *args: str) -> tuple[str, str, dict]:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "emo_pipeline", "benchmark", "--device", "cpu", "--family", "hallo",
               "--out", str(out), *args]
    with WatchedProcess(command, cwd=ROOT) as proc:
        code, stdout, stderr = proc.finish()
    assert code == 0, stderr[-3000:]
    return stdout, (out / "benchmark.md").read_text(encoding="utf-8"), json.loads(
        (out / "benchmark.json").read_text(encoding="utf-8"))


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]  # without the header


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if abs(n) >= 100 * 2**20 else f"{n / 2**20:.1f} MiB"


def check_rows(report: dict, markdown: str, presets: list[str], modes: list[str]) -> None:
    """A row per preset and mode asked, in order; the time and the ratio follow from the row's own fields."""
    from emo_pipeline.config import preset

    fps = preset("tiny").fps
    rows = report["rows"]
    assert [(r["preset"], r["mode"]) for r in rows] == [(p, m) for m in modes for p in presets]
    cells = table_rows(markdown)
    assert len(cells) == len(rows)
    for row, cell in zip(rows, cells):
        assert 1 <= row["steps_run"] <= row["steps"]
        assert 0 < row["step_seconds"] < row["measured_seconds"]
        # the steps' time scaled to the preset's steps, the rest of the clip as measured
        expected = row["measured_seconds"] + row["step_seconds"] * (row["steps"] / row["steps_run"] - 1)
        assert row["seconds"] == pytest.approx(expected, rel=1e-9)
        assert math.isfinite(row["seconds_per_video_second"]) and row["seconds_per_video_second"] > 0
        assert row["seconds_per_video_second"] == pytest.approx(row["seconds"] / (row["frames"] / fps), rel=1e-9)
        assert row["frames"] == preset("tiny").frames_per_clip
        assert row["measured_reserved"] is None  # no allocator on the CPU
        assert row["counted_peak"] > 0
        assert row["ratio"] == pytest.approx(row["measured_peak"] / row["counted_peak"], rel=1e-9)
        assert cell[:2] == [row["preset"], row["mode"]]
        assert cell[3] == f"{row['seconds_per_video_second']:.2f}"
        assert cell[4:] == [mib(row["measured_peak"]), mib(row["counted_peak"]), f"{row['ratio']:.2f}"]


def test_benchmark_table_on_the_cpu(tmp_path):
    presets, modes = ["quality"], ["normal", "low_vram_fp8"]  # more presets: the budget test below
    stdout, markdown, report = benchmark(tmp_path, "--budget-s", "120", "--presets", ",".join(presets),
                                         "--modes", ",".join(modes))
    assert markdown in stdout  # the table printed is the one written
    check_rows(report, markdown, presets, modes)
    # the measured peak is labelled as what it is on a CPU, beside the counted one and their ratio
    assert "process peak RSS growth" in report["measured_as"] and "CPU" in report["measured_as"]
    header = next(line for line in markdown.splitlines() if line.startswith("| preset"))
    assert f"measured peak ({report['measured_as']})" in header
    assert "counted peak" in header and "measured / counted" in header
    env = report["environment"]
    assert set(ENVIRONMENT) <= set(env), set(ENVIRONMENT) - set(env)
    assert env["torch"] == torch.__version__ and env["cores"] == os.cpu_count() and env["precision"] == "float32"
    assert env["family"] == "tiny" and env["size"] == "64²"
    environment_line = markdown.splitlines()[0]
    for key in ENVIRONMENT:
        assert f"{key}: {env[key]}" in environment_line
    # the counted peak is what cost.clip_memory counts for that pipeline (activations: the weights were resident)
    from emo_pipeline.cli.benchmark import _pipeline
    from emo_pipeline.config import preset
    from emo_pipeline.cost import clip_memory
    from emo_pipeline.sampling.presets import resolve_options
    from emo_pipeline.sampling.steps import SamplingOptions

    config = preset("tiny")
    pipe = _pipeline(config, torch.device("cpu"), torch.float32, "low_vram_fp8", None)
    counted = clip_memory(pipe, resolve_options(SamplingOptions(seed=0, preset="quality"), config)).activations
    assert report["rows"][-1]["counted_peak"] == counted


def test_impossible_budget_runs_fewer_steps_and_says_so(tmp_path):
    presets = ["quality", "balanced"]
    _, markdown, report = benchmark(tmp_path, "--budget-s", "0.001", "--presets", ",".join(presets),
                                    "--modes", "low_vram")
    check_rows(report, markdown, presets, ["low_vram"])
    first, second = report["rows"]
    assert first["steps_run"] == first["steps"]  # the first run measures the step time: whole
    assert second["steps"] == 20 and second["steps_run"] == 1  # nothing was left: one step, scaled to 20
    assert table_rows(markdown)[1][2] == "20 (1 run, scaled)"
    notes = "\n".join(report["notes"])
    assert "balanced/low_vram: 1 of 20 steps run within the budget" in notes
    assert "scaled by 20/1" in notes
    assert "over the budget" in notes
    assert all(f"- {note}" in markdown for note in report["notes"])
