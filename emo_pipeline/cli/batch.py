"""Many videos: `python -m emo_pipeline batch jobs.jsonl --out-dir renders/`, on one process or on
many under `accelerate launch` (one GPU each, CPU processes where there is none).

Each line of the jobs file is a JSON object: "audio" and "out" (the video's name under --out-dir),
optionally "image", and any `generate` option by its long name ("model", "seed", "steps",
"preset", "paste_back", ...). Relative paths are taken from the jobs file's folder.

Every process reads the same file and makes the same assignment, balanced by audio length, so
no job is rendered twice and no process waits on another. A job whose MP4 is already complete is
skipped, so a stopped run resumes where it was; a job that fails is recorded and the rest go on.
Each job ends as one line in <out-dir>/results.jsonl; with --evaluate the line holds the finished video's
scores too (Sync-C, Sync-D, offset, frames scored, faces lost; CSIM against the job's image when the face
models are there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io.disk import DiskFullError, disk_full_error, is_disk_full
from ..io.safe_files import open_append
from .job_checks import MAX_LINE_BYTES, cut, numbered_lines, option_problem, output_problem
from .model_folder import resolve_model
from .output_checks import check_folder
from .parser import generate_actions

RESULTS = "results.jsonl"
PER_VIDEO = ("image", "audio", "out")


@dataclass
class Job:
    line: int
    out: Path
    options: dict = field(default_factory=dict)  # generate's options by dest name, paths resolved
    seconds: float = 0.0  # the audio's length, for balancing


def read_jobs(path: str | Path, out_dir: str | Path, defaults: dict) -> list[Job]:
    """Every line checked before anything runs (against generate's options, their types and their
    `defaults`): one message naming each bad line. Outputs must stay inside `out_dir`."""
    path, out_dir = Path(path), Path(out_dir)
    actions = generate_actions()
    path_options = {"image", "audio", "model", "wav2vec", "separate_vocals"}
    jobs, problems, outs = [], [], {}
    with open(path, "rb") as file:
        lines = list(numbered_lines(file))
    for number, text in lines:
        if text is None:
            problems.append(f"line {number}: longer than {MAX_LINE_BYTES // 1024} KiB, not read (a job is one short "
                            "JSON object per line)")
            continue
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: not JSON ({err.msg})")
            continue
        if not isinstance(entry, dict):
            problems.append(f"line {number}: a job is a JSON object, e.g. {{\"audio\": \"a.wav\", \"out\": \"a.mp4\"}}")
            continue
        options = {key.replace("-", "_"): value for key, value in entry.items()}
        unknown = sorted(set(options) - set(defaults))
        missing = [key for key in ("audio", "out") if not options.get(key)]
        wrong = [problem for key in sorted(set(options) - set(unknown))
                 if (problem := option_problem(key, options[key], actions[key]))]
        if unknown or missing or wrong:
            problems.append(f"line {number}: " + "; ".join(
                ([f"unknown option(s) {', '.join(cut(k) for k in unknown)}"] if unknown else [])
                + ([f"missing {', '.join(missing)}"] if missing else []) + wrong))
            continue
        options = {key: defaults[key] if value is None else value for key, value in options.items()}
        for key in path_options & set(options):
            if isinstance(options[key], str) and options[key] != "auto":
                options[key] = str(Path(resolve_model(options[key], path.parent) if key == "model"
                                        else path.parent / options[key]).resolve())
        if isinstance(options.get("poses"), str) and (path.parent / options["poses"]).exists():
            options["poses"] = str((path.parent / options["poses"]).resolve())  # else a demo sequence's name
        for key in ("image", "audio"):
            if key in options and not Path(options[key]).is_file():
                problems.append(f"line {number}: {key} {options[key]}: no such file")
        out, problem = output_problem(out_dir, options.pop("out"))
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        if out in outs:
            problems.append(f"line {number}: out {out.name} is also line {outs[out]}'s")
        outs[out] = number
        jobs.append(Job(number, out, {**defaults, **options}))
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))
    for job in jobs:
        job.seconds = audio_seconds(job.options["audio"])
    return jobs


def audio_seconds(path: str) -> float:
    """The audio's length from its header (0 when unreadable: the job will fail and say why)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            if stream.duration is not None:
                return float(stream.duration * stream.time_base)
            return (container.duration or 0) / 1e6
    except (av.FFmpegError, IndexError, OSError):
        return 0.0


def assign(jobs: list[Job], processes: int) -> list[list[Job]]:
    """Longest audio first, each to the process with the least audio so far (ties: the lowest rank):
    every process's total stays within one job's length of the others'. The same on every process."""
    shares: list[list[Job]] = [[] for _ in range(processes)]
    totals = [0.0] * processes
    for job in sorted(jobs, key=lambda j: (-j.seconds, j.line)):
        rank = min(range(processes), key=lambda r: (totals[r], r))
        shares[rank].append(job)
        totals[rank] += job.seconds
    return [sorted(share, key=lambda j: j.line) for share in shares]


def is_complete(out: Path, seconds: float) -> bool:
    """The MP4 exists and holds one frame per audio frame of `seconds` of audio, with the whole sound."""
    from ..io.media import read_video_info

    if not out.is_file():
        return False
    try:
        info = read_video_info(out)
    except Exception:  # noqa: BLE001 - a damaged file is simply not complete
        return False
    frames = math.ceil(seconds * info["fps"] - 1e-6)
    sound = info["audio_duration"] or 0.0
    return info["frame_count"] == frames and abs(sound - frames / info["fps"]) < 0.05


def run_batch(jobs_file: str, out_dir: str, defaults: dict, threads: int | None = None, evaluate: bool = False) -> int:
    """Render this process's share; 0 when every job of the share is done, 1 when any failed. `threads`: each
    process's CPU threads (None: the cores split among the processes). `evaluate`: each finished video's scores
    (metrics/evaluate.py) go into its results line as "scores" (or "scores_error" when it cannot be scored)."""
    from accelerate import PartialState

    from ..cpu_threads import decide_threads
    from . import generate as cli  # looked up at call time: a test may stand in for load_model

    out_dir = Path(out_dir)
    jobs = read_jobs(jobs_file, out_dir, defaults)
    check_folder(out_dir, "--out-dir", longest_name=len(RESULTS))  # before any model loads
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes join as gloo ranks
    mine = assign(jobs, state.num_processes)[state.process_index]
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    decide_threads(threads, sharing=state.num_processes)  # a bad --threads stops the batch before any job
    metrics = load_metric_models(device) if evaluate else None  # missing files stop the batch before any render
    tag = f"[{state.process_index + 1}/{state.num_processes}]"
    total_seconds = sum(job.seconds for job in mine)
    print(f"{tag} {len(mine)} of {len(jobs)} jobs ({total_seconds:.1f} s of audio) on {device}", flush=True)
    pipelines, portraits = {}, {}
    failed, done_seconds, started = 0, 0.0, time.perf_counter()
    for index, job in enumerate(mine, 1):
        # the threads are the process's, not a job's: its processes split the cores
        args = argparse.Namespace(**{**job.options, "out": str(job.out), "threads": threads,
                                     "cpu_sharing": state.num_processes})
        if args.device == defaults["device"]:  # not chosen by the job: this process's device
            args.device = device
        record = {"line": job.line, "out": str(job.out), "process": state.process_index}
        clock = time.perf_counter()
        if is_complete(job.out, job.seconds):
            record.update(status="skipped", reason="already complete")
        else:
            try:
                cli.check_generate_paths(args)
                key = tuple(getattr(args, name) for name in cli.MODEL_OPTIONS)
                if key not in pipelines:
                    pipelines.clear()  # one model resident at a time
                    pipelines[key] = cli.load_model(args)
                frames = cli.render(pipelines[key], args, clock, portraits)
                record.update(status="done", frames=frames)
            except (KeyboardInterrupt, DiskFullError):
                raise  # a full disk stops the batch: every job after this one would fail the same way
            except Exception as err:  # noqa: BLE001 - a bad job is recorded and the others go on
                failed += 1
                record.update(status="error", error=f"{type(err).__name__}: {err}")
        if metrics is not None and record["status"] != "error":
            score_into(record, job, metrics)
        record["seconds"] = round(time.perf_counter() - clock, 3)
        append_result(out_dir / RESULTS, record)
        done_seconds += job.seconds
        rate = done_seconds / max(time.perf_counter() - started, 1e-9)
        written = sum(other.out.is_file() for other in jobs)  # all processes' videos so far
        print(f"{tag} job {index}/{len(mine)} (line {job.line}): {record['status']}; {rate:.3f} video seconds "
              f"per second; overall {written}/{len(jobs)} videos written", flush=True)
    print(f"{tag} finished: {len(mine) - failed} ok, {failed} failed", flush=True)
    return 1 if failed else 0


def load_metric_models(device: str):
    """SyncNet and S3FD from the model folder's metrics/, and the face analyzer for CSIM."""
    from ..metrics.evaluate import MetricModels
    from .model_folder import default_model_folder

    return MetricModels.load([default_model_folder()], device, identity=True)


def score_into(record: dict, job: Job, metrics) -> None:
    """The video's scores against its own sound (and CSIM against the job's image when the face models are there)
    as record["scores"]; a video that cannot be scored (no face tracked, too short) keeps its status, with the
    reason as record["scores_error"]."""
    from ..metrics.evaluate import evaluate_video

    analyzer = getattr(metrics, "analyzer", None)
    reference = job.options.get("image") if analyzer is not None and analyzer.embedder is not None else None
    try:
        record["scores"] = evaluate_video(job.out, metrics, reference=reference).as_dict()
    except (KeyboardInterrupt, DiskFullError):
        raise
    except Exception as err:  # noqa: BLE001 - an unscorable video is said, the batch goes on
        record["scores_error"] = f"{type(err).__name__}: {err}"


def append_result(path: Path, record: dict) -> None:
    """One line, written with one append: lines from several processes never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record) + "\n").encode()
    try:
        out = open_append(path)  # never through a link
    except OSError as err:
        raise ValueError(f"Cannot write {path} ({err.strerror}): the video is written, but its result line is "
                         "not; make the folder writable, or remove a link at that name.") from None
    try:
        with out:
            os.write(out.fileno(), data)  # one write: lines from several processes never interleave
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path.parent, path.name, len(data)) from None
        raise


def batch_command(args: argparse.Namespace) -> int:
    """`batch JOBS --out-dir DIR`: this process's share of the jobs file."""
    from .parser import generate_defaults

    if not Path(args.jobs).is_file():
        raise FileNotFoundError(f"batch: no jobs file {args.jobs}.")
    defaults = generate_defaults()
    defaults.pop("threads")  # batch's own --threads: per process, not per job
    return run_batch(args.jobs, args.out_dir, defaults, args.threads, getattr(args, "evaluate", False))
