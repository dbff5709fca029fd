"""The command line's default model folder (emo_pipeline/cli/model_folder.py): ComfyUI's models/emo when the pack
sits in ComfyUI's custom_nodes/, else the user's ~/.cache/emo-portrait/models; the same folder for `download` (its
--to) and for the commands that read models (`generate --model NAME`, `inspect NAME`, a batch job's model)."""

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import speech_like
from emo_pipeline.cli import main, model_folder
from emo_pipeline.cli.batch import read_jobs
from emo_pipeline.cli.model_folder import default_model_folder, resolve_model
from emo_pipeline.cli.parser import generate_defaults
from emo_pipeline.io.media import write_video


def pack(folder: Path) -> Path:
    """A checkout of the pack at `folder` (its __init__.py and nodes/ beside emo_pipeline/); its package folder."""
    (folder / "nodes").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "emo_pipeline").mkdir()
    return folder / "emo_pipeline"


@pytest.mark.parametrize("marker", ["comfy", "models", "folder_paths.py"])
def test_in_comfyuis_custom_nodes_it_is_comfyuis_models_emo(tmp_path, marker):
    comfy, cache = tmp_path / "ComfyUI", {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    package = pack(comfy / "custom_nodes" / "emo-portrait")
    assert default_model_folder(package, cache) == tmp_path / "cache" / "emo-portrait" / "models"  # no ComfyUI mark
    (comfy / marker).mkdir() if "." not in marker else (comfy / marker).write_text("")
    assert default_model_folder(package, cache) == comfy / "models" / "emo"


def test_a_pack_linked_into_custom_nodes_counts_from_the_path_it_was_started_through(tmp_path):
    source = pack(tmp_path / "src" / "emo-portrait")
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "models").mkdir()
    (comfy / "custom_nodes" / "emo-portrait").symlink_to(source.parent)
    linked = comfy / "custom_nodes" / "emo-portrait" / "emo_pipeline"
    assert default_model_folder(linked, {}) == comfy / "models" / "emo"
    cache = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    assert default_model_folder(source, cache) == tmp_path / "c" / "emo-portrait" / "models"


def test_anywhere_else_it_is_the_users_cache_not_the_clone(tmp_path, monkeypatch):
    clone = pack(tmp_path / "work" / "emo-portrait")
    (tmp_path / "work" / "models").mkdir()  # a models/ beside the pack is no ComfyUI without custom_nodes/
    wheel = tmp_path / "venv" / "lib" / "site-packages" / "emo_pipeline"
    wheel.mkdir(parents=True)
    for package in (clone, wheel):
        assert default_model_folder(package, {"XDG_CACHE_HOME": str(tmp_path / "cache")}) == \
            tmp_path / "cache" / "emo-portrait" / "models"
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert default_model_folder(package, {}) == tmp_path / "home" / ".cache" / "emo-portrait" / "models"


@pytest.fixture
def models(tmp_path, monkeypatch):
    """This package seen as a clone at tmp_path/pack; the default folder (the user's cache) holds the tiny model
    `tiny`."""
    from emo_pipeline.tiny import write_tiny_model_folder

    monkeypatch.setattr(model_folder, "PACKAGE", pack(tmp_path / "pack"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "emo-portrait" / "models"
    write_tiny_model_folder(folder)
    assert (folder / "tiny").is_dir()
    return folder


def test_download_puts_files_in_the_default_folder_and_says_where(models, monkeypatch, capsys):
    import emo_pipeline.download as downloads
    from emo_pipeline.download import Result

    asked = []

    def fake_download(names, to, *args, **kwargs):  # what the command asks for, no hub
        asked.append(Path(to))
        return Result(Path(to), ["hallo/net.pth"], [], 1, [Path(to) / "hallo"], [])

    monkeypatch.setattr(downloads, "download", fake_download)
    assert main(["download", "hallo"]) == 0
    out = capsys.readouterr().out
    assert asked == [models] and f"Model folder: {models} (the default; --to for another)" in out
    assert out.rstrip().endswith("--model hallo")  # generate finds it by name
    elsewhere = models.parent / "elsewhere"
    assert main(["download", "hallo", "--to", str(elsewhere)]) == 0
    out = capsys.readouterr().out
    assert asked[-1] == elsewhere and out.rstrip().endswith(f"--model {elsewhere / 'hallo'}")


def test_generate_inspect_and_batch_find_a_model_by_its_name_there(models, tmp_path, monkeypatch, capsys):
    write_video(tmp_path / "voice.mp4", torch.zeros(4, 16, 16, 3), 25, audio=(speech_like(0.12), 16000))
    monkeypatch.chdir(tmp_path)  # no tiny/ here: the name is the model folder's
    assert resolve_model("tiny") == str(models / "tiny") and resolve_model("absent") == "absent"
    assert main(["generate", "--model", "tiny", "--audio", "voice.mp4", "--out", "a.mp4", "--steps", "1",
                 "--no-resume"]) == 0
    assert f"Loading model from {models / 'tiny'}" in capsys.readouterr().out and (tmp_path / "a.mp4").is_file()
    assert main(["inspect", "tiny"]) == 0 and "config 'tiny'" in capsys.readouterr().out
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"audio": "voice.mp4", "out": "b.mp4", "model": "tiny"}) + "\n")
    assert read_jobs(jobs, tmp_path / "renders", generate_defaults())[0].options["model"] == str(models / "tiny")
    assert main(["generate", "--model", "hallo", "--out", "c.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model hallo: no such file or folder, here or in the model folder {models};")
    assert "download hallo" in err and not (tmp_path / "c.mp4").exists()


def test_a_path_that_exists_here_wins_over_the_name(models, tmp_path, monkeypatch):
    (tmp_path / "work" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_model("tiny") == "tiny"
    assert resolve_model(str(tmp_path / "absent")) == str(tmp_path / "absent")  # an absolute path stays as given
    assert resolve_model("tiny", base=tmp_path) == str(models / "tiny")  # a jobs file's folder has none


def test_help_says_the_default_folder():
    from emo_pipeline.cli.parser import build_parser

    helps = build_parser()._subparsers._group_actions[0].choices
    text = " ".join(helps["download"].format_help().split())
    assert f"here: {default_model_folder()}" in text and "custom_nodes" in text
    assert str(default_model_folder()) in " ".join(helps["upscale"].format_help().split())
    assert os.path.isabs(default_model_folder())
