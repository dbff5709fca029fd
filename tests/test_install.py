"""`pip install -e .` in the pack's folder gives the command line from any folder: the `emo-portrait` script and
`python -m emo_pipeline`. Installed for real into a throwaway virtual environment (offline: no index, no build
isolation, no dependencies; it sees this interpreter's packages)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_child

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_script_names_the_command_lines_main():
    target = PYPROJECT["project"]["scripts"]["emo-portrait"]
    module, _, function = target.partition(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0


def test_every_package_folder_is_a_package_the_install_finds():
    """setuptools' find takes only folders with an __init__.py: one without would be left out of a wheel."""
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["emo_pipeline", "emo_pipeline.*"]  # the engine only: nodes/ and tests/ are not installed
    folders = {path.parent for path in (ROOT / "emo_pipeline").rglob("*.py") if "__pycache__" not in path.parts}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []


def _setuptools_supports_editable() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 64  # PEP 660 editable installs


@pytest.mark.skipif(sys.platform == "win32", reason="the venv's layout (bin/) is the POSIX one")
@pytest.mark.skipif(not _setuptools_supports_editable(), reason="needs setuptools >= 64 here (no build isolation)")
def test_pip_install_e_gives_the_command_from_any_folder(tmp_path):
    venv, away = tmp_path / "venv", tmp_path / "elsewhere"
    away.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    before = run_child([str(python), "-m", "emo_pipeline", "--help"], cwd=away, env=env)
    if before.returncode == 0:
        pytest.skip("emo_pipeline is importable here without the install: nothing to prove")
    assert "No module named emo_pipeline" in before.stderr
    install = run_child([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                         "--quiet", "-e", str(ROOT)], cwd=away, env=env)
    assert install.returncode == 0, install.stderr
    script = run_child([str(venv / "bin" / "emo-portrait"), "--help"], cwd=away, env=env)
    assert script.returncode == 0, script.stderr
    text = " ".join(script.stdout.split())
    assert text.startswith("usage: emo-portrait") and "`emo-portrait COMMAND --help`" in text
    module = run_child([str(python), "-m", "emo_pipeline", "generate", "--help"], cwd=away, env=env)
    assert module.returncode == 0 and module.stdout.startswith("usage: python -m emo_pipeline generate"), module.stderr
    nodes = run_child([str(python), "-c", "import nodes"], cwd=away, env=env)
    assert nodes.returncode != 0  # the pack's ComfyUI nodes are not installed as a top-level package
