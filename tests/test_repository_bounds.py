"""Nothing the project ships reads a file from outside its own checkout.

A user's clone, a packager's tarball and the Comfy Registry's build have nothing beside the
repository, so every tracked file is searched for paths that leave the repository root:

* text: a `../shared` folder or `shared/reference` anywhere (this project's notes beside the
  checkout), and absolute paths into this machine's work folder;
* Python: a path built from `__file__` (directly, or through a module-level name such as ROOT)
  whose `.parent`, `.parents[N]`, `os.path.dirname` or `".."` steps climb above the root.

Paths the user gives (HALLO_PATH, --model, a hostile "../../x" in a test of refusals) are not
built from `__file__` and so are not flagged.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEXT_PATTERNS = {
    "a ../shared folder beside the checkout": re.compile(r"\.\.[\\/]+shared\b"),
    "the project's shared/reference notes": re.compile(r"\bshared[\\/]+reference\b|[\"']shared[\"']\s*/\s*[\"']reference[\"']"),
    "an absolute path into the work folder": re.compile(r"(?<![\w.])/work/"),
}
TEXT_SUFFIXES = {".py", ".sh", ".toml", ".txt", ".json", ".js", ".ini", ".cfg", ".yaml", ".yml", ".md", ""}
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()


def tracked_files(root: Path = ROOT) -> list[str]:
    """The repository's tracked files (every file under it when it is not a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
        return [name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]


class _Levels(ast.NodeVisitor):
    """How deep below the repository root each `__file__`-based path expression is (0: the root).

    A level below 0 is outside the checkout; once outside, a path stays outside."""

    def __init__(self, file_level: int):
        self.file_level = file_level
        self.names: dict[str, int] = {}
        self.escapes: list[int] = []  # line numbers

    def level(self, node: ast.AST) -> int | None:
        if isinstance(node, ast.Name):
            return self.file_level if node.id == "__file__" else self.names.get(node.id)
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("Path", "PurePath", "abspath", "realpath", "normpath", "fspath", "str") and node.args:
                return self.level(node.args[0])
            if name in ("resolve", "absolute", "expanduser") and isinstance(func, ast.Attribute):
                return self.level(func.value)
            if name == "dirname" and node.args:
                inner = self.level(node.args[0])
                return None if inner is None else inner - 1
            if name == "join" and node.args:
                return self._joined(self.level(node.args[0]), node.args[1:])
            if name in ("joinpath",) and isinstance(func, ast.Attribute):
                return self._joined(self.level(func.value), node.args)
            return None
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = self.level(node.value)
            return None if inner is None else inner - 1
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
            inner = self.level(node.value.value)
            index = node.slice
            if inner is not None and isinstance(index, ast.Constant) and isinstance(index.value, int):
                return inner - 1 - index.value
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._joined(self.level(node.left), [node.right])
        return None

    def _joined(self, base: int | None, parts: list[ast.AST]) -> int | None:
        if base is None:
            return None
        if base < 0:
            return base
        for part in parts:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                continue  # a variable part: only its constant steps are known
            for step in re.split(r"[\\/]+", part.value):
                if step == "..":
                    base -= 1
                    if base < 0:
                        return base
                elif step not in ("", "."):
                    base += 1
        return base

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.expr):
            level = self.level(node)
            if level is not None and level < 0:
                self.escapes.append(node.lineno)
                return  # one report per expression
        super().generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        level = self.level(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name) and level is not None:
                self.names[target.id] = level


def outside_references(name: str, text: str) -> list[str]:
    """Where the file `name` (relative to the root) refers to a path outside the repository."""
    found = []
    for line_number, line in enumerate(text.splitlines(), 1):
        for what, pattern in TEXT_PATTERNS.items():
            if pattern.search(line):
                found.append(f"{name}:{line_number}: {what}: {line.strip()[:120]}")
    if name.endswith(".py"):
        try:
            tree = ast.parse(text)
        except SyntaxError as error:
            return found + [f"{name}: does not parse ({error})"]
        levels = _Levels(file_level=len(Path(name).parts))
        levels.visit(tree)
        lines = text.splitlines()
        found += [f"{name}:{n}: a path from __file__ that climbs above the repository root: {lines[n - 1].strip()[:120]}"
                  for n in levels.escapes]
    return found


def test_no_tracked_file_refers_outside_the_repository():
    problems = []
    for name in tracked_files():
        if name == THIS_FILE or Path(name).suffix not in TEXT_SUFFIXES:
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary files (weights, images) and files deleted in the work tree
        problems += outside_references(name, text)
    assert problems == [], "references outside the repository:\n" + "\n".join(problems)


def test_the_guard_catches_planted_references():
    planted = {
        "tests/conftest.py": 'SHARED = ROOT.parent / "shared" / "reference"\nROOT = 1\n',
        "tests/a.py": 'KEYS = open("../shared/reference/hallo_net_keys.tsv")\n',
        "tests/b.py": 'from pathlib import Path\nROOT = Path(__file__).resolve().parents[1]\nX = ROOT.parent / "x"\n',
        "tests/c.py": 'import os\nX = os.path.join(os.path.dirname(__file__), "..", "..", "notes.md")\n',
        "benchmarks/d.py": 'from pathlib import Path\nX = Path(__file__).parents[2]\n',
        "nodes/e.py": 'from pathlib import Path\nHERE = Path(__file__).parent\nX = HERE / "../../../shared"\n',
        "README.md": "COMFYUI_PATH=/work/comfyui\n",
    }
    for name, text in planted.items():
        assert outside_references(name, text), name


def test_the_guard_leaves_paths_inside_the_repository_alone():
    inside = {
        "tests/b.py": 'from pathlib import Path\nROOT = Path(__file__).resolve().parents[1]\nX = ROOT / "tests" / "data"\n',
        "tests/c.py": 'import os\nX = os.path.join(os.path.dirname(__file__), "..", "models")\n',
        "nodes/e.py": 'from pathlib import Path\nX = Path(__file__).parent.parent / "web"\nY = "../../escaped/emo"\n',
        "README.md": "--out-dir /shared/renders/ and models/emo/hallo\n",
    }
    for name, text in inside.items():
        assert outside_references(name, text) == [], name
