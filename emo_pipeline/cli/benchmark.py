"""`python -m emo_pipeline benchmark`: what this machine does with each preset and memory mode.

On a GPU: the family's full-size network with random weights built on the device (nothing to download;
real weights with --model), one 512² clip per preset and mode, timed, with the device allocator's peak
beside the peak counted by emo_pipeline/cost.py. On a CPU: the same code at the tiny size, the measured
peak being the process's sampled RSS growth (labelled so). A budget bounds the whole run: when the clips
would not fit in it, fewer steps are run and the steps' time is scaled to the preset's steps, the rest of
the clip (ReferenceNet, VAE) counted as measured (said in the notes).

`benchmark --quality CLIP` instead renders the user's own clip with the loaded model (--model, else the bundled demo
model), once per preset and memory mode, as `generate` renders it, and prints per mode seconds per video second
beside Sync-C, Sync-D, the offset, CSIM (with --image and the face models) and PSNR against the exact path (the
quality preset in normal mode), scored by metrics/evaluate.py.
"""

from __future__ import annotations

import json
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..components import default_dtype
from ..io.safe_files import real_folder, write_atomic
from ..config import EMOConfig, preset
from ..cost import clip_memory
from ..pipeline import EMOPipeline
from ..sampling.presets import PRESETS, resolve_options
from ..sampling.steps import SamplingOptions

MODES = ("normal", "low_vram", "low_vram_fp8")
TINY = {"hallo": "tiny", "hallo2": "tiny", "joyhallo": "tiny-joyhallo", "emo": "tiny-emo", "echomimic": "tiny-echomimic",
        "echomimic-acc": "tiny-echomimic", "memo": "tiny-memo"}


@dataclass
class Row:
    preset: str
    mode: str
    steps_run: int
    steps: int
    frames: int
    seconds: float  # scaled to the preset's steps
    seconds_per_video_second: float
    measured_seconds: float  # the clip as run (steps_run steps)
    step_seconds: float  # of which in the denoising steps
    measured_peak: int
    measured_reserved: int | None
    counted_peak: int

    @property
    def ratio(self) -> float:
        return self.measured_peak / self.counted_peak if self.counted_peak else float("nan")


@dataclass
class Report:
    environment: dict
    measured_as: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        env = ", ".join(f"{k}: {v}" for k, v in self.environment.items())
        lines = [f"Environment: {env}", "",
                 f"| preset | memory mode | steps | s per video s | measured peak ({self.measured_as}) | "
                 "counted peak | measured / counted |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            steps = f"{r.steps}" if r.steps_run == r.steps else f"{r.steps} ({r.steps_run} run, scaled)"
            lines.append(f"| {r.preset} | {r.mode} | {steps} | {r.seconds_per_video_second:.2f} | "
                         f"{_mib(r.measured_peak)} | {_mib(r.counted_peak)} | {r.ratio:.2f} |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def to_json(self) -> str:
        return json.dumps({"environment": self.environment, "measured_as": self.measured_as, "notes": self.notes,
                           "rows": [dict(asdict(r), ratio=r.ratio) for r in self.rows]}, indent=1)


def _mib(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**20:,.0f} MiB" if abs(n) >= 100 * 2**20 else f"{n / 2**20:.1f} MiB"


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, vram=f"{props.total_memory / 2**30:.1f} GiB", cuda=torch.version.cuda,
                   capability=f"{props.major}.{props.minor}",
                   fp8=("native" if (props.major, props.minor) >= (8, 9) else "stored, computed in fp16"),
                   attention="SDPA flash" if torch.backends.cuda.flash_sdp_enabled() else "SDPA")
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
        except OSError:
            env["driver"] = "unknown"
    else:
        import os

        env.update(cpu=cpu_name(), threads=torch.get_num_threads(), cores=os.cpu_count(),
                   load_average=", ".join(f"{x:.1f}" for x in os.getloadavg()),
                   attention="SDPA (CPU)", fp8="stored, computed in fp32")
    return env


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _release_freed_heap() -> None:
    """Give memory freed by earlier runs back to the system (glibc keeps it otherwise), so that the next
    run's RSS growth is its own allocations rather than zero."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakRSS:
    """The process's resident memory, sampled every 5 ms while a run lasts: its growth over the start."""

    def __enter__(self):
        import psutil

        _release_freed_heap()
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _pipeline(config: EMOConfig, device: torch.device, dtype: torch.dtype, mode: str, model: str | None) -> EMOPipeline:
    if model:
        from ..components import load_pipeline

        return load_pipeline(model, device, dtype, low_vram=mode != "normal", fp8_weights=mode == "low_vram_fp8")
    if device.type == "cuda":
        from ..cost import full_size_pipeline

        pipe = full_size_pipeline(config, device=device, dtype=dtype, low_vram=mode != "normal")
    else:
        from ..tiny import tiny_components

        pipe = EMOPipeline(*tiny_components(config), device=device, dtype=dtype, low_vram=mode != "normal")
    if mode == "low_vram_fp8":
        pipe.store_weights_fp8()
    return pipe


def run_benchmark(family: str = "hallo", device: str | torch.device = "cpu", presets: tuple[str, ...] = tuple(PRESETS),
                  modes: tuple[str, ...] = MODES, model: str | None = None, budget_s: float = 600.0,
                  on_row=None) -> Report:
    """One clip per preset and mode; see the module's docstring."""
    device = torch.device(device)
    gpu = device.type == "cuda"
    if model:
        from ..io.loading import network_config
        from ..io.model_files import find_net

        config = network_config(find_net(Path(model)))
    else:
        config = preset(family if gpu else TINY.get(family, family))
    dtype = default_dtype(config, device)
    report = Report(environment(device), "torch.cuda.max_memory_allocated, weights included" if gpu else
                    "process peak RSS growth, CPU, sampled every 5 ms; counted: activations")
    report.environment.update(family=config.name, size=f"{config.sample_size}²", precision=str(dtype)[6:])
    if not gpu:
        report.notes.append(f"CPU: the tiny '{config.name}' configuration at {config.sample_size}² (the same code as "
                            "the full size); the measured peak is the process's RSS growth, sampled every 5 ms.")
    started = time.perf_counter()
    runs = [(p, m) for m in modes for p in presets]
    per_step: float | None = None  # seconds of one denoising step, from the last run
    per_run = 0.0  # seconds of a run besides its steps: building, ReferenceNet, VAE, counting the peak
    for index, (name, mode) in enumerate(runs):
        began_run = time.perf_counter()
        options = resolve_options(SamplingOptions(seed=0, preset=name), config)
        left = budget_s - (began_run - started)
        remaining = len(runs) - index
        steps = options.steps
        if per_step is not None and (per_run + per_step * steps) * remaining > left:
            steps = max(1, min(steps, int((left / remaining - per_run) / per_step)))
        pipe = _pipeline(config, device, dtype, mode, model)
        pipe.profile = True  # the steps' time apart from the rest of the clip (synchronised on a GPU)
        gen = torch.Generator().manual_seed(0)
        portrait = pipe.prepare_portrait(torch.rand(config.sample_size, config.sample_size, 3, generator=gen),
                                         face_box=(0.25, 0.2, 0.75, 0.8))
        frames = options.frames_per_clip
        audio = pipe.encode_audio(0.1 * torch.randn(1, int(config.audio_sample_rate * frames / config.fps),
                                                    generator=gen), config.audio_sample_rate)
        run_options = resolve_options(SamplingOptions(seed=0, preset=name, steps=steps), config)
        if gpu:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        with _PeakRSS() as rss:
            began = time.perf_counter()
            video = pipe.generate(portrait, audio, run_options)
            if gpu:
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - began
        in_steps = pipe.timings.get("denoising", 0.0)
        per_step = in_steps / steps
        scaled = elapsed - in_steps + in_steps * options.steps / steps
        measured = torch.cuda.max_memory_allocated(device) if gpu else rss.growth
        reserved = torch.cuda.max_memory_reserved(device) if gpu else None
        # the pipeline that ran, counted on fake tensors; on the CPU the weights were resident before the run, so its
        # growth is set against the counted activations
        memory = clip_memory(pipe, options)
        counted = memory.total if gpu else memory.activations
        row = Row(name, mode, steps, options.steps, len(video), scaled, scaled / (len(video) / config.fps),
                  elapsed, in_steps, measured, reserved, counted)
        report.rows.append(row)
        if steps != options.steps:
            report.notes.append(f"{name}/{mode}: {steps} of {options.steps} steps run within the budget; the steps' "
                                f"{in_steps:.1f} s are scaled by {options.steps}/{steps}, the rest of the clip "
                                f"({elapsed - in_steps:.1f} s) is counted as measured.")
        if on_row:
            on_row(row)
        del pipe, video
        if gpu:
            torch.cuda.empty_cache()
        per_run = time.perf_counter() - began_run - in_steps
    spent = time.perf_counter() - started
    report.notes.append(f"whole run {spent:.0f} s (budget {budget_s:.0f} s)" + (
        "; over the budget: the first run is measured whole, later ones with no fewer than one step, and what a "
        "run does besides its steps (building, ReferenceNet, VAE, counting the peak) is not shortened"
        if spent > budget_s else ""))
    return report


def write_report(report: Report, folder: str | Path) -> tuple[Path, Path]:
    folder = real_folder(folder)
    md, js = folder / "benchmark.md", folder / "benchmark.json"
    write_atomic(md, report.markdown().encode())
    write_atomic(js, report.to_json().encode())
    return md, js


# ---------------------------------------------------------------------------- --quality CLIP
EXACT = ("quality", "normal")  # the exact path: the model's own sampling, nothing stored in fp8


@dataclass
class QualityRow:
    preset: str
    mode: str
    frames: int
    seconds: float  # the render as `generate` runs it: portrait, audio, sampling, decoding, writing
    seconds_per_video_second: float
    sync_c: float | None
    sync_d: float | None
    offset: int | None
    csim: float | None
    psnr: float | None  # dB against the exact path's video (inf where equal; None for the exact path itself)
    error: str | None = None


def video_psnr(a: str | Path, b: str | Path) -> float | None:
    """PSNR (dB, 8-bit frames) of the mean squared error over every pixel of two videos, decoded side by side;
    None when their frame counts or sizes differ."""
    import math

    from ..io.media import iter_video_frames

    total, count = 0.0, 0
    left, right = iter_video_frames(a), iter_video_frames(b)
    for x in left:
        y = next(right, None)
        if y is None or x.shape != y.shape:
            return None
        total += float(((x - y).double() * 255).square().sum())
        count += x.numel()
    if next(right, None) is not None or count == 0:
        return None
    mse = total / count
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def run_quality(clip: str, image: str | None, model: str | None, device: str, presets: tuple[str, ...],
                modes: tuple[str, ...], folder: str | Path, metric_models, on_row=None) -> list[QualityRow]:
    """`clip` rendered as `generate --audio clip [--image image] [--model model]` does it, with each preset and
    memory mode (the exact path first: the reference for PSNR), each video timed and scored against its own
    sound (and, with a portrait and the face models, CSIM against it). Videos are written to `folder`."""
    import argparse

    from ..metrics.evaluate import evaluate_video
    from . import generate as cli
    from .parser import generate_defaults

    folder = Path(folder)
    runs = [EXACT] + [(p, m) for m in modes for p in presets if (p, m) != EXACT]
    analyzer = getattr(metric_models, "analyzer", None)
    reference = image if image and analyzer is not None and analyzer.embedder is not None else None
    rows, exact, pipes = [], None, {}
    for name, mode in runs:
        out = folder / f"{name}-{mode}.mp4"
        args = argparse.Namespace(**{**generate_defaults(), "audio": clip, "image": image, "model": model,
                                     "preset": name, "memory_mode": mode, "device": device, "out": str(out),
                                     "no_resume": True})
        if mode not in pipes:
            pipes.clear()  # one model resident at a time
            pipes[mode] = cli.load_model(args)
        began = time.perf_counter()
        frames = cli.render(pipes[mode], args, began)
        elapsed = time.perf_counter() - began
        fps = args.fps or pipes[mode].config.fps
        row = QualityRow(name, mode, frames, elapsed, elapsed / (frames / fps), None, None, None, None, None)
        try:
            scores = evaluate_video(out, metric_models, reference=reference)
            row.sync_c, row.sync_d, row.offset, row.csim = scores.sync_c, scores.sync_d, scores.offset, scores.csim
        except ValueError as err:  # no face tracked, too short: the row says why
            row.error = str(err)
        if (name, mode) == EXACT:
            exact = out
        else:
            row.psnr = video_psnr(exact, out)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def quality_table(rows: list[QualityRow]) -> str:
    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| preset | memory mode | s per video s | Sync-C | Sync-D | offset | CSIM | PSNR vs exact (dB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        psnr = "exact path" if (r.preset, r.mode) == EXACT else number(r.psnr, 2)
        offset = "-" if r.offset is None else f"{r.offset:+d}"
        lines.append(f"| {r.preset} | {r.mode} | {r.seconds_per_video_second:.2f} | {number(r.sync_c)} | "
                     f"{number(r.sync_d)} | {offset} | {number(r.csim)} | {psnr} |")
    notes = [f"- {r.preset}/{r.mode}: not scored: {r.error}" for r in rows if r.error]
    return "\n".join(lines + notes) + "\n"


def quality_command(args) -> int:
    """`benchmark --quality CLIP`: the table printed and written as quality.md and quality.json in --out."""
    from ..io.safe_files import real_folder
    from ..metrics.evaluate import MetricModels
    from .model_folder import default_model_folder

    clip = Path(args.quality)
    for path, what in ((clip, "audio"), (Path(args.image) if args.image else None, "image")):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"No such {what} file: {path}")
    metrics = [Path(args.metrics).expanduser()] if args.metrics else [default_model_folder()]
    models = MetricModels.load(metrics, args.device, identity=bool(args.image))  # before any render
    folder = real_folder(args.out)
    rows = run_quality(str(clip), args.image, args.model, args.device, tuple(args.presets.split(",")),
                       tuple(args.modes.split(",")), folder, models,
                       on_row=lambda r: print(f"  {r.preset}/{r.mode}: {r.seconds_per_video_second:.2f} s per video "
                                              "second", flush=True))
    text = quality_table(rows)
    print(text)
    write_atomic(folder / "quality.md", text.encode())
    write_atomic(folder / "quality.json", json.dumps([asdict(r) for r in rows], indent=1).encode())
    print(f"Wrote {folder / 'quality.md'} and {folder / 'quality.json'} (the videos beside them)")
    return 0


def benchmark_command(args) -> int:
    """`benchmark`: the report printed and written as benchmark.md and benchmark.json."""
    if getattr(args, "quality", None):
        return quality_command(args)
    report = run_benchmark(args.family, args.device, tuple(args.presets.split(",")), tuple(args.modes.split(",")),
                           args.model, args.budget_s,
                           on_row=lambda r: print(f"  {r.preset}/{r.mode}: {r.seconds_per_video_second:.2f} s per "
                                                  "video second", flush=True))
    print(report.markdown())
    md, js = write_report(report, args.out)
    print(f"Wrote {md} and {js}")
    return 0
