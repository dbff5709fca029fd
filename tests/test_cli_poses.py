"""`generate --poses` and `--pose-extension`: EchoMimic v2's hand poses on the command line, by a demo sequence's name
in the model folder (echomimic_v2/poses/<name>), a pose folder or a .npz; on a tiny v2 download."""

import math
import os
import sys

import pytest
import torch

from conftest import ROOT, WatchedProcess, speech_like
from emo_pipeline.cli import main
from emo_pipeline.cli.model_folder import pose_search_folders, resolve_poses
from emo_pipeline.config import tiny_echomimic_v2_config
from emo_pipeline.io.loading import convert_checkpoint
from emo_pipeline.io.media import read_video_info, write_video
from emo_pipeline.pose_input import POSE_EXTENSIONS
from emo_pipeline.poses.demo_files import save_pose_folder, save_pose_npz
from emo_pipeline.poses.sequence import EXTEND_MODES
from emo_pipeline.tiny import write_tiny_echomimic_folder
from test_pose_nodes import demo_like

NET = "echomimic_v2/net.safetensors"  # the tiny download converted with its config (tiny: no auto-detection)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A model folder as the command line finds it ($XDG_CACHE_HOME/emo-portrait/models) holding a tiny v2
    download with a demo pose sequence, 01, in echomimic_v2/poses/; and a short voice."""
    root = tmp_path_factory.mktemp("poses_cli")
    models = root / "cache" / "emo-portrait" / "models"
    folder = write_tiny_echomimic_folder(models / "echomimic_v2", tiny_echomimic_v2_config())
    convert_checkpoint(folder, folder / "net.safetensors", config=tiny_echomimic_v2_config())
    save_pose_folder(demo_like(10), folder / "poses" / "01")
    save_pose_npz(demo_like(4, seed=1), root / "mine.npz")
    write_video(root / "voice.mp4", torch.zeros(13, 64, 64, 3), 25, audio=(speech_like(0.5), 16000))
    return root


@pytest.fixture
def cache(place, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(place / "cache"))
    return place


def audio_frames(path) -> int:
    return math.ceil(read_video_info(path)["audio_duration"] * 24 - 1e-6)


def test_generate_v2_with_a_demo_sequence_by_name(place, tmp_path):
    """`--model echomimic_v2/... --poses 01`: the name found in the model folder's echomimic_v2/poses/, the sequence
    made as long as the audio (looping), said once; one video frame per audio frame."""
    out = tmp_path / "v2.mp4"
    env = {**os.environ, "XDG_CACHE_HOME": str(place / "cache"), "EMO_THREADS": "1"}
    with WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--model", NET, "--poses", "01",
                         "--pose-extension", "loop", "--audio", str(place / "voice.mp4"), "--steps", "1", "--cfg",
                         "1", "--out", str(out), "--no-resume"], cwd=ROOT, env=env) as run:
        code, printed, err = run.finish()
    assert code == 0, err
    frames = audio_frames(place / "voice.mp4")
    line = f"poses: 10 frames (pose folder 01) extended to {frames} by looping for {frames / 24:.1f} s of audio"
    assert printed.count("poses: ") == 1 and line in printed.splitlines()
    assert read_video_info(out)["frame_count"] == frames


def test_v2_without_poses_is_a_plain_error_naming_the_option(place, tmp_path):
    out = tmp_path / "none.mp4"
    env = {**os.environ, "XDG_CACHE_HOME": str(place / "cache"), "EMO_THREADS": "1"}
    with WatchedProcess([sys.executable, "-m", "emo_pipeline", "generate", "--model", NET, "--audio",
                         str(place / "voice.mp4"), "--steps", "1", "--out", str(out)], cwd=ROOT, env=env) as run:
        code, printed, err = run.finish()
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: EchoMimic v2 is driven by a hand-pose sequence as well as the audio, and none was given: give --poses: "
        "a demo sequence's name (a folder in the model folder's echomimic_v2/poses/), a pose folder (0.npy, 1.npy, …), "
        "a .npz or a driving video."]
    assert "Encoding audio" not in printed and not out.exists()  # said before any slow work but the model's load


def test_a_pose_folder_or_npz_by_path_and_the_extension_chosen(cache, tmp_path, capsys):
    out = tmp_path / "npz.mp4"
    assert main(["generate", "--model", NET, "--poses", str(cache / "mine.npz"), "--pose-extension", "hold",
                 "--audio", str(cache / "voice.mp4"), "--steps", "1", "--cfg", "1", "--out", str(out),
                 "--no-resume", "--threads", "1"]) == 0
    frames = audio_frames(cache / "voice.mp4")
    printed = capsys.readouterr().out
    assert f"poses: 4 frames (demo) extended to {frames} by holding the last pose" in printed  # the .npz's own name
    assert read_video_info(out)["frame_count"] == frames


def test_an_unknown_name_says_where_demo_sequences_go_before_loading_anything(cache, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["generate", "--model", NET, "--poses", "07", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    models = cache / "cache" / "emo-portrait" / "models"
    assert f"--poses 07: no such pose folder or .npz, and no demo pose sequence of that name in " \
           f"{models / 'echomimic_v2' / 'poses'}" in captured.err
    assert "assets/halfbody_demo/pose/<name>/" in captured.err and "nothing is downloaded" in captured.err
    assert "Loading model" not in captured.out and not out.exists()


def test_poses_given_to_a_model_that_does_not_use_them_are_said_to_be_ignored(cache, tmp_path, capsys):
    out = tmp_path / "random.mp4"
    assert main(["generate", "--random", "--poses", "01", "--audio", str(cache / "voice.mp4"), "--steps", "1",
                 "--out", str(out), "--no-resume", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    folder = cache / "cache" / "emo-portrait" / "models" / "echomimic_v2" / "poses" / "01"
    assert printed.count("not driven by hand poses") == 1
    assert f"EMO / Hallo / Hallo2 models are not driven by hand poses: the poses given (--poses {folder}) are " \
           "ignored." in printed
    assert read_video_info(out)["frame_count"] > 0


def test_where_a_demo_name_is_looked_for(cache, tmp_path, monkeypatch):
    """A path that exists wins; else <--model's folder>/poses/<name>, then echomimic_v2/poses/<name> beside it and
    in the model folder; a .npz by its name with or without the suffix; a name that is a path names nothing there."""
    models = cache / "cache" / "emo-portrait" / "models"
    v2_poses = models / "echomimic_v2" / "poses"
    own = tmp_path / "my_v2"
    save_pose_folder(demo_like(2), own / "poses" / "01")
    save_pose_npz(demo_like(2), own / "poses" / "extra.npz")
    assert pose_search_folders(str(own / "net.safetensors"))[0] == own / "poses"
    assert pose_search_folders(str(own)) == [own / "poses", tmp_path / "echomimic_v2" / "poses", v2_poses]
    assert resolve_poses("01", str(own)) == str(own / "poses" / "01")
    assert resolve_poses("01", None) == str(v2_poses / "01")
    assert resolve_poses("extra", str(own)) == resolve_poses("extra.npz", str(own)) == str(own / "poses" / "extra.npz")
    monkeypatch.chdir(tmp_path)
    assert resolve_poses("my_v2/poses/01", None) == "my_v2/poses/01"  # a path, relative to here
    assert resolve_poses("../01", str(own)) == "../01" and resolve_poses("02", str(own)) == "02"  # unchanged: not found


def test_the_options_and_their_help():
    from emo_pipeline.cli.parser import build_parser, generate_defaults

    assert POSE_EXTENSIONS == EXTEND_MODES
    defaults = generate_defaults()
    assert defaults["poses"] is None and defaults["pose_extension"] == "pingpong"  # a batch job may set both
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    groups = {group.title: [a.dest for a in group._group_actions] for group in generate._action_groups}
    # with the image and the audio, before V-Express's keypoints
    assert groups["inputs"][-5:] == ["poses", "no_pose_fit", "pose_extension", "keypoints", "retarget"]
    assert defaults["no_pose_fit"] is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--pose-extension", "bounce"])


def test_a_batch_job_s_pose_folder_is_taken_from_the_jobs_file_s_folder(cache, tmp_path):
    import json

    from emo_pipeline.cli.batch import read_jobs
    from emo_pipeline.cli.parser import generate_defaults

    save_pose_folder(demo_like(2), tmp_path / "jobs" / "my_poses")
    (tmp_path / "jobs" / "a.wav").write_bytes(b"")
    jobs = tmp_path / "jobs" / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(job) for job in (
        {"audio": "a.wav", "out": "a.mp4", "poses": "my_poses", "pose_extension": "loop"},
        {"audio": "a.wav", "out": "b.mp4", "poses": "01"})))
    first, second = read_jobs(jobs, tmp_path / "out", generate_defaults())
    assert first.options["poses"] == str(tmp_path / "jobs" / "my_poses") and first.options["pose_extension"] == "loop"
    assert second.options["poses"] == "01" and second.options["pose_extension"] == "pingpong"  # a name: as given
