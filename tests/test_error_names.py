"""Every exception class of ours that can reach ComfyUI's error report is named plainly there:
`emo_portrait.DownloadError`, not `<ComfyUI>/custom_nodes/emo-portrait.emo_pipeline.download.errors.DownloadError`
(ComfyUI's execution.py names an exception `type.__module__ + "." + type.__qualname__`; a real ComfyUI shows it in
tests/test_comfyui_integration.py). They still pickle and copy as themselves."""

import ast
import builtins
import copy
import importlib
import pickle

import pytest

import comfy_stubs

ENGINE = comfy_stubs.ROOT / "emo_pipeline"
# Exceptions that never reach a node: the command line's (the nodes never import emo_pipeline/cli), a
# transfer's internal cut (caught where it is raised).
COMMAND_LINE = "emo_pipeline/cli/"
NEVER_REACH_A_NODE = {"emo_pipeline/download/transfer.py": {"_Cut"}}
BUILTIN_EXCEPTIONS = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
                      and issubclass(getattr(builtins, n), BaseException)}


def exception_classes() -> list[tuple[str, str]]:
    """(module, class name) of every class in the engine and the nodes that derives from an exception,
    found in the source (so a new one cannot be missed)."""
    found, classes = {}, []
    for path in sorted([*ENGINE.rglob("*.py"), *(comfy_stubs.ROOT / "nodes").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases]
                classes.append((path.relative_to(comfy_stubs.ROOT).as_posix(), node.name, bases))
    changed = True
    while changed:  # derived from a builtin exception, or from one of ours
        changed = False
        for path, name, bases in classes:
            if (path, name) not in found and any(b in BUILTIN_EXCEPTIONS or b in {n for _, n in found} for b in bases):
                found[path, name] = True
                changed = True
    return sorted(found)


def test_the_scan_finds_the_errors_named_in_issue_35():
    names = {name for _, name in exception_classes()}
    assert {"DownloadError", "CheckpointError", "ConfigFileError", "DiskFullError", "UnsafePath"} <= names


@pytest.mark.parametrize("path,name", [c for c in exception_classes() if not c[0].startswith(COMMAND_LINE)
                                       and c[1] not in NEVER_REACH_A_NODE.get(c[0], set())],
                         ids=lambda v: v if isinstance(v, str) and "/" not in v else "")
def test_each_exception_is_named_plainly_and_pickles(path, name):
    assert path.startswith("emo_pipeline/"), "the nodes define no exception classes; import them here if they do"
    module = importlib.import_module(path[:-3].replace("/", "."))
    cls = getattr(module, name)
    assert cls.__module__ == "emo_portrait"
    assert f"{cls.__module__}.{cls.__qualname__}" == f"emo_portrait.{name}"  # ComfyUI's full_type_name
    error = cls(28, "No space left in /out for a.mp4") if issubclass(cls, OSError) else cls("what went wrong")
    for again in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert type(again) is cls and again.args == error.args and str(again) == str(error)


def test_a_plain_name_survives_a_pack_loaded_under_its_path(tmp_path):
    """Loaded as ComfyUI loads it (module names made of the pack's path), DownloadError is still
    emo_portrait.DownloadError, and it pickles by its real home."""
    comfy_stubs.install(tmp_path / "models", tmp_path / "out")
    pack = comfy_stubs.load_pack()
    errors = importlib.import_module(pack.__name__ + ".emo_pipeline.download.errors")
    assert errors.__name__.startswith(str(comfy_stubs.ROOT).replace(".", "_x_"))
    cls = errors.DownloadError
    assert f"{cls.__module__}.{cls.__qualname__}" == "emo_portrait.DownloadError"
    again = pickle.loads(pickle.dumps(cls("offline")))
    assert type(again) is cls and str(again) == "offline"
