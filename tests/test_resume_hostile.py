"""The resume folder is input like any other: render farms, shared servers and team folders are written by more
than one person and program, and a stopped render's folder sits there for hours. Whatever was changed in it (its
manifest, its files, links planted in it, the folder itself a link), the next run ends with the exact video of an
uninterrupted render (resumed, or rendered afresh), never a different one, never a traceback, and never reads,
writes or removes a file outside the folder."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from test_resume import STEPS, check_complete, hallo, kept_state, state_dir, with_state  # noqa: F401

OUTSIDE = b"a file of someone else's, beside the renders\n"


@pytest.fixture
def outside(tmp_path):
    """A file outside the resume folder, and a record of every file our code opens (Python's audit hook)."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(OUTSIDE)
    opened: list[str] = []
    OPENED.append(opened)
    yield SimpleNamespace(path=path, opened=opened)
    OPENED.remove(opened)
    assert path.read_bytes() == OUTSIDE  # neither written nor removed


OPENED: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _rehash(folder: Path, manifest: dict) -> None:
    """Write `manifest` with each named file's true size and hash, as someone who knows the format would."""
    for entry in [*manifest.get("segments", []), manifest.get("carry"), manifest.get("kept")]:
        path = folder / entry["file"] if isinstance(entry, dict) and isinstance(entry.get("file"), str) else None
        if path is not None and path.is_file():
            data = path.read_bytes()
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _render(hallo, out: Path) -> None:
    from emo_pipeline.cli import main

    assert main([*hallo["argv"], "--out", str(out)]) == 0
    check_complete(out, hallo["frames"], 0.5)  # the uninterrupted run's frames, and the state gone


@pytest.mark.parametrize("where", ["../../elsewhere/precious.txt", "ABSOLUTE", "/etc/passwd"])
@pytest.mark.parametrize("entry", ["segment", "carry"])
def test_a_manifest_naming_a_file_outside_is_damage_and_nothing_outside_is_touched(
        hallo, kept_state, outside, where, entry, tmp_path):
    out = tmp_path / "renders" / "video.mp4"
    out.parent.mkdir()
    folder = with_state(kept_state, out)
    manifest = _manifest(folder)
    name = str(outside.path) if where == "ABSOLUTE" else where
    target = manifest["segments"][0] if entry == "segment" else manifest["carry"]
    real = folder / target["file"]
    target["file"] = name
    if where != "/etc/passwd":  # the outside file named with its true size and hash: it would pass a hash check
        target["bytes"], target["sha256"] = len(OUTSIDE), hashlib.sha256(OUTSIDE).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    real.unlink()
    with pytest.warns(UserWarning, match="is damaged .*not one of this pack's file names.*starting this render afresh"):
        _render(hallo, out)
    assert not [p for p in outside.opened if Path(p).resolve() in (outside.path.resolve(), Path("/etc/passwd"))]


@pytest.mark.parametrize("planted", ["manifest.json.tmp", "frames_00002.mkv.tmp", "carry_00002.pt.tmp"])
def test_a_link_planted_at_a_name_the_render_writes_is_never_written_through(hallo, kept_state, outside, planted,
                                                                             tmp_path):
    out = tmp_path / "video.mp4"
    folder = with_state(kept_state, out)
    (folder / planted).symlink_to(outside.path)
    _render(hallo, out)  # resumed, saving clip after clip beside the link


def test_a_resume_folder_that_is_a_link_is_not_used(hallo, kept_state, outside, tmp_path, capsys):
    other = tmp_path / "someone-elses"
    shutil.copytree(kept_state, other)
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    out = tmp_path / "video.mp4"
    state_dir(out).symlink_to(other, target_is_directory=True)
    from emo_pipeline.cli import main

    assert main([*hallo["argv"], "--out", str(out)]) == 0
    assert "is not used to keep progress: it is a link" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before  # not read into, written or emptied
    assert state_dir(out).is_symlink()  # the link itself is left as it was
    from conftest import decoded_frames

    assert torch.equal(decoded_frames(out), hallo["frames"])


def _carry(folder: Path) -> Path:
    return folder / _manifest(folder)["carry"]["file"]


def _tamper(folder: Path, case: str) -> None:
    manifest = _manifest(folder)
    if case == "segment says 5 frames":
        manifest["segments"][0]["frames"] = manifest["frames"] = 5
    elif case == "carry's clip index":
        carry = torch.load(_carry(folder), weights_only=True)
        carry["clip"] = 2
        torch.save(carry, _carry(folder))
    elif case == "carry's steps":
        carry = torch.load(_carry(folder), weights_only=True)
        carry["done_steps"] = 1
        torch.save(carry, _carry(folder))
    elif case == "fingerprint a list":
        manifest["fingerprint"] = list(manifest["fingerprint"].values())
    elif case == "fingerprint missing":
        del manifest["fingerprint"]
    elif case == "serial a string":
        manifest["serial"] = "7"
    elif case == "serial a float":
        manifest["serial"] = 7.5
    elif case == "carry carries code":
        class Payload:
            def __reduce__(self):
                return (os.system, ("touch pwned",))

        torch.save({"clip": 1, "payload": Payload()}, _carry(folder))
    elif case == "segment of another size":
        from emo_pipeline.render_state import encode_segment

        (folder / manifest["segments"][0]["file"]).write_bytes(encode_segment(torch.zeros(4, 32, 32, 3,
                                                                                          dtype=torch.uint8)))
    elif case == "no carry":
        _carry(folder).unlink()
        manifest["carry"] = None
    _rehash(folder, manifest)


CASES = ["segment says 5 frames", "carry's clip index", "carry's steps", "fingerprint a list", "fingerprint missing",
         "serial a string", "serial a float", "carry carries code", "segment of another size", "no carry"]


@pytest.mark.parametrize("case", CASES)
def test_a_state_that_does_not_add_up_starts_afresh_in_one_line(hallo, kept_state, case, tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "video.mp4"
    folder = with_state(kept_state, out)
    _tamper(folder, case)
    with pytest.warns(UserWarning) as warned:
        _render(hallo, out)
    damage = [str(w.message) for w in warned if "damaged" in str(w.message)]
    assert len(damage) == 1 and "starting this render afresh" in damage[0] and "\n" not in damage[0]
    assert not (tmp_path / "pwned").exists()
    again = tmp_path / "again.mp4"  # never stuck: the same command runs clean after
    _render(hallo, again)


# ---------------------------------------------------------------------------- the property
def _mutations(rng: random.Random, folder: Path) -> str:
    """One random change of the kinds that happen to a shared folder: bytes flipped in any file, a field of the
    manifest set to a random value (with or without the files' hashes fixed up), a file removed or replaced."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    kind = rng.choice(["flip", "field", "field rehashed", "remove", "swap"])
    if kind == "flip":
        path = rng.choice(files)
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return f"flip {path.name}"
    if kind == "remove":
        path = rng.choice(files)
        path.unlink()
        return f"remove {path.name}"
    if kind == "swap":
        a, b = rng.sample(files, 2)
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
        return f"swap {a.name} {b.name}"
    manifest = _manifest(folder)
    values = [None, -1, 0, 1, 2, 3, 4, 5, 13, 10**12, 2.5, "", "x", "../outside.txt", "/etc/passwd", "frames_00001.mkv",
              "carry_00001.pt", "carry_00009.pt", [], {}, [1, 2], {"a": "b"}, True]
    holders = [("", manifest)] + [(f"segments[{i}]", s) for i, s in enumerate(manifest["segments"])]
    if manifest.get("carry"):
        holders.append(("carry", manifest["carry"]))
    label, holder = rng.choice(holders)
    key = rng.choice(sorted(holder))
    holder[key] = rng.choice(values)
    if kind == "field rehashed":
        try:
            _rehash(folder, manifest)
        except (TypeError, AttributeError, KeyError):
            (folder / "manifest.json").write_text(json.dumps(manifest))
    else:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return f"{kind} {label}.{key}"


def test_random_damage_ends_in_the_exact_state_or_a_fresh_start(hallo, kept_state, tmp_path):
    """Three hundred seeded cases on the state a stopped render left: opening it either resumes with exactly the
    frames and carry that render kept (so the video is the uninterrupted one) or starts afresh with the folder
    removed; never an exception, never a file outside touched."""
    import warnings

    from emo_pipeline.render_state import RenderState, decode_segment
    from emo_pipeline.sampling.clip_loop import carry_problem

    original = _manifest(kept_state)
    frames = torch.cat([decode_segment((kept_state / s["file"]).read_bytes()) for s in original["segments"]])
    carry = torch.load(kept_state / original["carry"]["file"], weights_only=True)
    opts = SimpleNamespace(frames_per_clip=4, steps=STEPS)
    outcomes = {"resumed": 0, "afresh": 0}
    for seed in range(300):
        rng = random.Random(seed)
        case = tmp_path / f"case{seed}"
        folder = case / "state"
        shutil.copytree(kept_state, folder)
        sentinel = case / "outside.txt"
        sentinel.write_bytes(OUTSIDE)
        what = _mutations(rng, folder)
        opened: list[str] = []
        OPENED.append(opened)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = RenderState(folder, original["fingerprint"], say=lambda _: None,
                                    check_carry=lambda c, kept: carry_problem(c, kept, 13, opts), frame_shape=(64, 64))
                resumed = torch.cat(list(state.stored_frames())) if state.frames_done else None
        finally:
            OPENED.remove(opened)
        assert not {Path(p).resolve() for p in opened} & {sentinel.resolve(), Path("/etc/passwd")}, what
        if state.frames_done:
            outcomes["resumed"] += 1
            assert state.frames_done == len(frames), what
            assert torch.equal(resumed, frames), what
            restored = state.restore()
            assert restored.keys() == carry.keys(), what
            for key, value in carry.items():
                same = torch.equal(restored[key], value) if isinstance(value, torch.Tensor) else restored[key] == value
                assert same, (what, key)
        else:
            outcomes["afresh"] += 1
            assert state.restore() is None and not folder.exists(), what
        assert sentinel.read_bytes() == OUTSIDE, what
        shutil.rmtree(case)
    print(f"\n{outcomes}")
    assert outcomes["afresh"] > 100  # the mutations do damage


def test_a_carry_of_gigabytes_is_a_valid_size(kept_state):
    """MEMO's carry is its memory of every attention block: gigabytes are a size the manifest may name."""
    from emo_pipeline.render_state import _valid_manifest

    manifest = _manifest(kept_state)
    manifest["carry"]["bytes"] = 7 * 2**30
    assert _valid_manifest(manifest)["carry"]["bytes"] == 7 * 2**30
    manifest["carry"]["bytes"] = 2**60
    with pytest.raises(ValueError, match="size is 1152921504606846976, not a whole number"):
        _valid_manifest(manifest)
