"""A newcomer's first hour, walked as the README tells it and nothing more: a plain copy of the repository (its
tracked files only) → the first demo video → the first download → the first real render, each command read from
the README's own code blocks.

What the walk cannot do as a user would, and does instead:
- `pip install ...`: the packages are this test's own; each requirements file the line names must exist, list
  only packages installed here, and `pip install -e .` must name a pyproject that gives the commands used next.
- the hub: a local one (tests/local_hub.py) serving each family's files in their real layout with tiny shapes,
  and the commands run through tests/tiny_families.py, which swaps the full-size presets for the tiny ones.
- `emo-portrait`: run as `python -m emo_pipeline` from a folder outside the pack, with the pack on the path,
  as an installed package is.
- renders get `--steps 2`: the walk checks the path, not the quality of ten steps.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import run_child
from local_hub import LocalHub

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _commands(section: str) -> list[str]:
    """The shell commands of a section's code blocks, comments dropped, `&&` chains split."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


def _copy_of_the_repository(destination: Path) -> Path:
    """What `git clone` gives: the tracked files (with their content here, so the walk tests this tree)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source, target = ROOT / name, destination / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return destination


def _check_pip(command: str, folder: Path) -> None:
    from packaging.requirements import Requirement

    words = shlex.split(command)
    assert words[:2] == ["pip", "install"], command
    if "-e" in words:
        scripts = tomllib.loads((folder / words[words.index("-e") + 1] / "pyproject.toml").read_text())
        assert "emo-portrait" in scripts["project"]["scripts"], "pip install -e . must give emo-portrait"
        return
    for i, word in enumerate(words):
        if word == "-r":
            for line in (folder / words[i + 1]).read_text().splitlines():
                line = line.split("#")[0].strip()
                if line and not line.startswith("-"):
                    requirement = Requirement(line)
                    version = metadata.version(requirement.name)  # raises when not installed
                    assert requirement.specifier.contains(version, prereleases=True), (line, version)
        elif re.match(r"^[A-Za-z][\w.-]*==", word):
            name, _, wanted = word.partition("==")
            assert metadata.version(name).split("+")[0] == wanted, word


def _emo(command: str, folder: Path, pack: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    if words[0] == "emo-portrait":
        words = words[1:]
    else:
        assert words[:3] == ["python", "-m", "emo_pipeline"], command
        words = words[3:]
    if words[0] == "generate":
        words += ["--steps", "2"]
    child = [sys.executable, str(pack / "tests" / "tiny_families.py"), *words]
    return run_child(child, cwd=folder, env=env)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from test_download import _repositories

    server = LocalHub()
    for repo, files in _repositories(tmp_path_factory.mktemp("repos")).items():
        for path, data in files.items():
            server.add(repo, path, data)
    server.start()
    yield server
    server.stop()


def test_the_readme_walked_from_a_clone_to_a_real_render(hub, tmp_path):
    text = README.read_text()
    pack = _copy_of_the_repository(tmp_path / "emo-portrait")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EMO_", "PYTHONPATH"))}
    env.update(HOME=str(home), HF_ENDPOINT=hub.endpoint, HF_HOME=str(home / ".cache" / "huggingface"),
               XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(pack))

    # The two commands: the first runs the main job on the bundled default, from the pack's folder.
    first = _commands(_section(text, "The two commands"))
    assert any(c.startswith("python -m pytest") for c in first)
    for command in first:
        if command.startswith("pip "):
            _check_pip(command, pack)
        elif "emo_pipeline generate" in command:
            result = _emo(command, pack, pack, env)
            assert result.returncode == 0, result.stderr
            out = pack / shlex.split(command)[shlex.split(command).index("--out") + 1]
            from emo_pipeline.io.media import read_video_info

            assert read_video_info(out)["frame_count"] == 100  # the demo's 4 s at 25 fps

    # The first real video on the command line, from the user's own folder with their own photo and voice.
    user = home / "videos"
    user.mkdir()
    from PIL import Image
    from test_batch import write_wav

    steps = _commands(_section(text, "Your first real video on the command line"))
    assert steps, "the README gives the command-line path in a code block"
    rendered = []
    for command in steps:
        if command.startswith("pip "):
            _check_pip(command, pack)
            continue
        words = shlex.split(command)
        if "--image" in words:
            photo = user / words[words.index("--image") + 1]
            Image.fromarray((np.random.default_rng(0).random((300, 240, 3)) * 255).astype(np.uint8)).save(photo)
        if "--audio" in words:
            write_wav(user / words[words.index("--audio") + 1], 0.6)
        result = _emo(command, user, pack, env)
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
        if "--out" in words:
            rendered.append(user / words[words.index("--out") + 1])
    from emo_pipeline.io.media import read_video_info

    assert rendered and read_video_info(rendered[-1])["frame_count"] == 15  # 0.6 s at Hallo's 25 fps
    assert not (pack / "models" / "emo").exists()  # the download went where the README says, not into the copy


def test_the_comfyui_steps_name_what_the_pack_has():
    """The ComfyUI lines: the requirements file, the templates and the download entry they name exist."""
    section = _section(README.read_text(), "Your first real video in ComfyUI")
    assert "pip install -r emo-portrait/requirements.txt" in section and (ROOT / "requirements.txt").exists()
    for name in re.findall(r"\*\*(emo_\w+)\*\*|`(emo_\w+)`", section):
        name = next(n for n in name if n)
        assert (ROOT / "example_workflows" / f"{name}.json").exists(), name
    from emo_pipeline.download import DOWNLOADS
    from emo_pipeline.download.catalogue import human_size

    entry = re.search(r"`download: (\S+) \(~([^)]+)\)`", section)  # as Load EMO Model lists it (nodes/downloads.py)
    assert entry and entry.group(2) == human_size(DOWNLOADS[entry.group(1)].approx_bytes)
