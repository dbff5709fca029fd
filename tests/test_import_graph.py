"""The engine and the nodes import each other in no circle.

Every import statement in emo_pipeline/ and nodes/ is an arrow: at module level, inside functions and
under `if TYPE_CHECKING:` alike, with relative imports resolved against the pack's package (nodes/ reaches
the engine as `..emo_pipeline`). `from package import name` points at the submodule when `name` is one,
else at the package's __init__.py. Importing a submodule also runs its package's __init__.py; that is not
an arrow (it would make every package that re-exports its submodules a circle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "pack"  # the name ComfyUI gives the repository's folder; any name does
PACKAGES = ("emo_pipeline", "nodes")


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name (under PACK) → file, for every .py file of the packages."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((PACK, *(parts[:-1] if parts[-1] == "__init__" else parts)))
            found[name] = path
    return found


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that the file imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            candidates = [f"{PACK}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = f"{PACK}.{node.module}"
            candidates = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                          for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:  # `import a.b.c` of a module: its longest known name
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imported(path, name, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a -> ... -> a) per group of modules that reach each other (Tarjan's strongly connected
    components, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_circle(graph, set(group)) for group in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A path a -> b -> ... -> a inside one strongly connected group (breadth-first, so the shortest)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{sorted(group)} is no circle")


COMFYUI_MODULES = {"comfy", "comfy_extras", "folder_paths", "latent_preview", "server", "execution", "node_helpers"}


def outside_imports(path: Path) -> set[str]:
    """The top-level names of the absolute imports in a file (torch, comfy, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_a_planted_circle_is_found_through_relative_and_function_level_imports(tmp_path):
    """engine/a imports b at the top; b imports a's parent package's c inside a function; c imports a
    with `from . import a`: one circle of three. d only imports a (no circle of its own)."""
    package = tmp_path / "emo_pipeline"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .a import A\n")  # re-exporting makes no circle
    (package / "sub" / "a.py").write_text("from .b import B\n\nA = 1\n")
    (package / "sub" / "b.py").write_text("def B():\n    from ..c import C\n    return C\n")
    (package / "c.py").write_text("from .sub import a\n\nC = a.A\n")
    (package / "d.py").write_text("import emo_pipeline.sub.a\n")
    graph = import_graph(tmp_path, ("emo_pipeline",))
    assert graph[f"{PACK}.emo_pipeline.sub.b"] == {f"{PACK}.emo_pipeline.c"}  # resolved from inside a function
    assert graph[f"{PACK}.emo_pipeline.c"] == {f"{PACK}.emo_pipeline.sub.a"}  # `from . import a`: the module
    assert graph[f"{PACK}.emo_pipeline.d"] == {f"{PACK}.emo_pipeline.sub.a"}
    found = cycles(graph)
    assert found == [[f"{PACK}.emo_pipeline.c", f"{PACK}.emo_pipeline.sub.a", f"{PACK}.emo_pipeline.sub.b",
                      f"{PACK}.emo_pipeline.c"]]
    (package / "sub" / "b.py").write_text("def B():\n    return 2\n")  # the arrow back removed: no circle
    assert cycles(import_graph(tmp_path, ("emo_pipeline",))) == []


def test_the_engine_and_the_nodes_have_no_import_circle():
    graph = import_graph(ROOT)
    assert len(graph) > 100 and f"{PACK}.emo_pipeline.pipeline" in graph[f"{PACK}.emo_pipeline.components"]
    assert f"{PACK}.emo_pipeline.sampling.steps" in graph[f"{PACK}.nodes.sampler"]  # nodes reach the engine
    found = cycles(graph)
    assert found == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_engine_imports_no_comfyui_and_the_nodes_do():
    engine = {name: outside_imports(path) & COMFYUI_MODULES for name, path in modules(ROOT, ("emo_pipeline",)).items()}
    assert {name: found for name, found in engine.items() if found} == {}
    nodes = set().union(*(outside_imports(path) for path in modules(ROOT, ("nodes",)).values()))
    assert {"comfy", "folder_paths"} <= nodes  # the check reads the imports the nodes do make


ARCHITECTURE = ROOT / "docs" / "architecture.md"
ALLOWED_UP = {("io.media", "audio.resample")}  # named on the page: a sound track resampled in plain torch


def layer_order(page: str) -> list[str]:
    """The engine's parts (`cli`, `pipeline`, `io`, ...) in the order the page's tree lists them: the lines
    under `emo_pipeline/` indented by two, each naming one part or several (`a.py, b.py`)."""
    tree = page.split("```")[1]
    order = []
    for line in tree.splitlines():
        if not line.startswith("  ") or line.startswith("   "):
            continue
        names = re.split(r"\s{2,}", line.strip())[0]
        order += [n.strip().rstrip("/").removesuffix(".py") for n in names.split(",")]
    return order


def arrows_up(graph: dict[str, set[str]], order: list[str]) -> tuple[list[str], set[str]]:
    """Imports from an engine part to one listed above it (`a.b -> c.d`, without the pack's prefix), and the
    engine parts the order leaves out."""
    rank = {name: i for i, name in enumerate(order)}
    engine = f"{PACK}.emo_pipeline."

    def part(module: str) -> str | None:
        return module.removeprefix(engine).split(".")[0] if module.startswith(engine) else None

    up, unlisted = [], set()
    for module, targets in sorted(graph.items()):
        source = part(module)
        if source is None:
            continue
        if source not in rank:
            unlisted.add(source)
            continue
        for target in sorted(targets):
            dest = part(target)
            if dest is None or dest == source:
                continue
            if dest not in rank:
                unlisted.add(dest)
            elif rank[dest] < rank[source] and (module.removeprefix(engine), target.removeprefix(engine)) \
                    not in ALLOWED_UP:
                up.append(f"{module.removeprefix(engine)} -> {target.removeprefix(engine)}")
    return up, unlisted


def test_imports_run_down_the_architecture_page_s_list():
    order = layer_order(ARCHITECTURE.read_text(encoding="utf-8"))
    assert order[:2] == ["__main__", "cli"] and {"pipeline", "sampling", "io", "models", "config"} <= set(order)
    up, unlisted = arrows_up(import_graph(ROOT), order)
    assert unlisted == set(), f"engine parts missing from docs/architecture.md's tree: {sorted(unlisted)}"
    assert up == [], "imports up the list of docs/architecture.md:\n" + "\n".join(up)


def test_an_arrow_up_the_list_is_found(tmp_path):
    """A planted import from io/ up to the pipeline facade, inside a function, is reported; so is a part the
    page does not list."""
    package = tmp_path / "emo_pipeline"
    (package / "io").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "io" / "__init__.py").write_text("")
    (package / "pipeline.py").write_text("from .io.media import read\n")
    (package / "io" / "media.py").write_text("def read():\n    from ..pipeline import EMOPipeline\n")
    (package / "extra.py").write_text("from .pipeline import read\n")
    order = layer_order("```\nemo_pipeline/\n  pipeline.py   the facade\n  io/\n    media.py   files\n```")
    assert order == ["pipeline", "io"]
    up, unlisted = arrows_up(import_graph(tmp_path, ("emo_pipeline",)), order)
    assert up == ["io.media -> pipeline"] and unlisted == {"extra"}
