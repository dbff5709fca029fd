"""`download`: each family's files fetched from a hub on 127.0.0.1 (tests/local_hub.py, which answers as the hub
does; the real huggingface_hub client talks to it), verified, placed where our loaders read them, and rendered.

The hub serves tiny files under each family's real repository names and layout, and some of the files those
repositories also hold that our loaders do not read (SD1.5's UNet, AnimateDiff's motion module, ...): they must
never be asked for.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_families
from conftest import run_child
from local_hub import LocalHub, serving
from emo_pipeline.config import tiny_config, tiny_echomimic_config, tiny_echomimic_v2_config, tiny_memo_config
from emo_pipeline.download import DOWNLOADS, DownloadCancelled, DownloadError, download, human_size, missing_files
from emo_pipeline.download.fetch import STATE
from emo_pipeline.tiny import (tiny_components, write_mask_separator, write_tiny_echomimic_folder,
                               write_tiny_memo_folder)
from test_face import arcface_model, scrfd_model

ROOT = Path(__file__).resolve().parents[1]
BLOCK = __import__("huggingface_hub").constants.DOWNLOAD_CHUNK_SIZE  # the client writes in blocks of this size
TINY_CLI = [sys.executable, str(ROOT / "tests" / "tiny_families.py")]
HALLO = "fudan-generative-ai/hallo"
# Files the repositories hold that our loaders never read.
UNREAD = {
    HALLO: ["stable-diffusion-v1-5/unet/diffusion_pytorch_model.safetensors", "motion_module/mm_sd_v15_v2.ckpt",
            "wav2vec/wav2vec2-base-960h/vocab.json", "face_analysis/models/1k3d68.onnx",
            "audio_separator/download_checks.json"],
    "fudan-generative-ai/hallo2": ["hallo2/net_g.pth", "CodeFormer/codeformer.pth"],
    "BadToBest/EchoMimic": ["sd-image-variations-diffusers/unet/diffusion_pytorch_model.bin",
                            "sd-vae-ft-mse/diffusion_pytorch_model.bin"],
    "stabilityai/sd-vae-ft-mse": ["diffusion_pytorch_model.bin"],
    "facebook/wav2vec2-base-960h": ["pytorch_model.bin", "vocab.json"],
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _net_pth(config) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(tiny_components(config)[0].state_dict(), buffer)
    return buffer.getvalue()


POSE_BLOAT = 64  # the hub's pose_encoder.pth is 1.7 GB for 1.09 M values (780 times their 2.2 MB in fp16)


def _bloated_pth(path: Path) -> bytes:
    """The state dict at `path` saved as views into one storage POSE_BLOAT times larger than its values, so that
    the pickle, like EchoMimic v2's pose_encoder.pth, weighs far more than what it holds."""
    import io

    state = torch.load(path, weights_only=True)
    storage = torch.zeros(POSE_BLOAT * sum(v.numel() for v in state.values()))
    views, offset = {}, 0
    for key, value in state.items():
        views[key] = storage[offset: offset + value.numel()].view(value.shape)
        views[key].copy_(value)
        offset += 3 * value.numel()
    buffer = io.BytesIO()
    torch.save(views, buffer)
    return buffer.getvalue()


def _repositories(work: Path) -> dict[str, dict[str, bytes]]:
    """Tiny files under each repository's real paths."""
    _, vae, encoder = tiny_components(tiny_config())
    vae.save_pretrained(work / "vae")
    encoder.model.save_pretrained(work / "wav2vec")
    (work / "wav2vec" / "preprocessor_config.json").write_text(
        '{"do_normalize": true, "feature_size": 1, "padding_value": 0.0, "sampling_rate": 16000}')
    face = work / "face"
    face.mkdir()
    scrfd_model(face / "scrfd_10g_bnkps.onnx")
    arcface_model(face / "glintr100.onnx", np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32))
    separator = write_mask_separator(work / "Kim_Vocal_2.onnx", np.ones((4, 3072), np.float32))
    vae_files, wav2vec_files, face_files = _tree(work / "vae"), _tree(work / "wav2vec"), _tree(face)

    repos: dict[str, dict[str, bytes]] = {}
    for name, config in (("hallo", tiny_config()), ("hallo2", tiny_config())):
        files = {f"{name}/net.pth": _net_pth(config)}
        files |= {f"sd-vae-ft-mse/{k}": v for k, v in vae_files.items()}
        files |= {f"wav2vec/wav2vec2-base-960h/{k}": v for k, v in wav2vec_files.items()}
        files |= {f"face_analysis/models/{k}": v for k, v in face_files.items()}
        files["audio_separator/Kim_Vocal_2.onnx"] = separator.read_bytes()
        repos[f"fudan-generative-ai/{name}"] = files
    echo = write_tiny_echomimic_folder(work / "echomimic", tiny_echomimic_config())
    write_tiny_echomimic_folder(work / "echomimic-acc", tiny_echomimic_config(), acc=True)
    files = {k: v for k, v in _tree(echo).items() if not k.startswith("sd-vae-ft-mse/")}
    files |= {k: v for k, v in _tree(work / "echomimic-acc").items() if "_acc" in k}
    repos["BadToBest/EchoMimic"] = files
    v2 = write_tiny_echomimic_folder(work / "echomimic-v2", tiny_echomimic_v2_config())
    write_tiny_echomimic_folder(work / "echomimic-v2-acc", tiny_echomimic_v2_config(), acc=True)
    files = {k: v for k, v in _tree(v2).items() if not k.startswith(("sd-vae-ft-mse/", "audio_processor/"))}
    files |= {k: v for k, v in _tree(work / "echomimic-v2-acc").items() if "_acc" in k}
    files["pose_encoder.pth"] = _bloated_pth(v2 / "pose_encoder.pth")
    repos["BadToBest/EchoMimicV2"] = files  # no whisper, no VAE: they come from v1's repository and stabilityai
    memo = write_tiny_memo_folder(work / "memo-root", tiny_memo_config())
    files = _tree(memo)
    files |= {f"misc/face_analysis/models/{k}": v for k, v in face_files.items()}
    files["misc/vocal_separator/Kim_Vocal_2.onnx"] = separator.read_bytes()
    # MEMO's emotion detector: its classifier in MEMO's misc/, emotion2vec+ in its own repository (tiny, real layouts)
    from test_memo_emotion import write_detector_files
    write_detector_files(work / "emotion")
    files["misc/audio_emotion_classifier/diffusion_pytorch_model.safetensors"] = \
        (work / "emotion" / "misc" / "audio_emotion_classifier" / "diffusion_pytorch_model.safetensors").read_bytes()
    repos["memoavatar/memo"] = files
    repos["emotion2vec/emotion2vec_plus_large"] = {
        "model.pt": (work / "emotion" / "emotion2vec_plus_large" / "model.pt").read_bytes(), "config.yaml": b"not read"}
    repos["stabilityai/sd-vae-ft-mse"] = dict(vae_files)
    repos["facebook/wav2vec2-base-960h"] = dict(wav2vec_files)
    for repo, paths in UNREAD.items():
        for path in paths:
            repos[repo][path] = b"never read by our loaders " + path.encode()
    return repos


@pytest.fixture(scope="module")
def repositories(tmp_path_factory):
    return _repositories(tmp_path_factory.mktemp("repos"))


@pytest.fixture
def hub(repositories, monkeypatch):
    tiny_families.install(monkeypatch)
    with serving(repositories, monkeypatch) as server:
        yield server


def _env(hub: LocalHub, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DOWNLOAD_TIMEOUT="600", HF_HOME=str(Path(tempfile.gettempdir()) / "no-hf-home"),
               PYTHONPATH=str(ROOT), **extra)
    return env


def _cli(hub: LocalHub, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_child([*TINY_CLI, *args], env=_env(hub, **env))


def _expected(names: list[str], repositories) -> dict[str, bytes]:
    wanted = {}
    for name in names:
        for f in DOWNLOADS[name].files:
            wanted.setdefault(f.target, repositories[f.repo][f.path])
    return wanted


@pytest.mark.parametrize("family", ["hallo", "hallo2", "echomimic", "echomimic-acc", "echomimic-v2",
                                    "echomimic-v2-acc", "memo"])
def test_each_family_places_exactly_the_files_its_loader_reads_and_renders(family, hub, repositories, tmp_path):
    models = tmp_path / "models" / "emo"
    result = download([family], models)
    converted = [DOWNLOADS[family].converted] if DOWNLOADS[family].convert else []  # EchoMimic v2's, always
    placed = {k: v for k, v in _tree(models).items() if not k.startswith(STATE + "/") and k not in converted}
    assert placed == _expected([family], repositories)  # these files, these bytes, nothing else
    assert sorted(result.placed) == sorted(placed)
    assert result.converted == [models / c for c in converted]
    assert result.models == (result.converted or [models / DOWNLOADS[family].model])  # what is rendered below
    unread = {f"/{repo}/resolve/main/{p}" for repo, paths in UNREAD.items() for p in paths}
    assert not unread & set(hub.content_gets())
    assert not (models / STATE / "partial").exists() and not (models / STATE / "verified").exists()

    from emo_pipeline.cli import main

    out = tmp_path / "video.mp4"
    poses = []
    if family.startswith("echomimic-v2"):  # driven by hand poses too: a sequence in the demo files' format
        from emo_pipeline.poses.demo_files import save_pose_folder
        from test_echomimic_v2 import waving_hands

        poses = ["--poses", str(save_pose_folder(waving_hands(5, size=768), tmp_path / "poses"))]
    assert main(["generate", "--model", str(result.models[0]), "--out", str(out), "--steps", "2",
                 "--audio", str(_speech(tmp_path, 0.5)), *poses]) == 0
    from emo_pipeline.io.media import read_video_info

    fps = {"echomimic": 24, "echomimic-acc": 24, "echomimic-v2": 24, "echomimic-v2-acc": 24, "memo": 30}.get(family, 25)
    assert read_video_info(out)["frame_count"] == int(np.ceil(0.5 * fps))


def _speech(folder: Path, seconds: float) -> Path:
    from test_batch import write_wav

    return write_wav(folder / "speech.wav", seconds)


def test_a_second_download_asks_nothing(hub, tmp_path):
    models = tmp_path / "emo"
    download(["hallo", "separator"], models)
    hub.requests.clear()
    result = download(["hallo", "separator"], models)
    assert hub.requests == [] and result.placed == []
    assert sorted(result.present) == sorted(f.target for name in ("hallo", "separator") for f in DOWNLOADS[name].files)
    assert missing_files(models, [DOWNLOADS["hallo"]]) == []


def test_a_download_killed_midway_resumes_with_the_right_bytes(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    net = repositories[HALLO]["hallo/net.pth"]
    hub.hold, hub.hold_after = (HALLO, "hallo/net.pth"), BLOCK + 4096
    assert len(net) > BLOCK + 4096
    partial = models / STATE / "partial" / "fudan-generative-ai--hallo" / "hallo" / "net.pth"
    child = subprocess.Popen([*TINY_CLI, "download", "hallo", "--to", str(models)], env=_env(hub),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: partial.is_file() and partial.stat().st_size >= BLOCK, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    hub.release.set()
    assert not (models / "hallo" / "net.pth").exists()  # nothing half-placed
    assert not (models / "vae").exists() and not (models / "wav2vec").exists()  # nor any other file of the model
    done = partial.stat().st_size
    hub.requests.clear()
    run = _cli(hub, "download", "hallo", "--to", str(models))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (models / "hallo" / "net.pth").read_bytes() == net
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.startswith("/cdn/") and r]
    assert f"bytes={done}-" in ranges  # continued where it stopped
    assert "Ready: python -m emo_pipeline generate" in run.stdout


def _wait_for(condition, child: subprocess.Popen, bound_s: float = 900) -> None:
    """Until `condition()` holds (the event itself); the bound only keeps a broken run from hanging."""
    deadline = time.monotonic() + bound_s
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"the download ended early: {child.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("the event never came")
        time.sleep(0.05)


def test_a_corrupted_byte_is_caught_and_nothing_is_placed(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    hub.corrupt.add((HALLO, "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"))
    with pytest.raises(DownloadError, match="arrived damaged .*sha256.*nothing was placed"):
        download(["hallo"], models)
    assert {k for k in _tree(models) if not k.startswith(STATE + "/")} == set()
    hub.corrupt.clear()
    download(["hallo"], models)
    assert (models / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        repositories[HALLO]["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]


def _mount_tmpfs(folder: Path, size: str, read_only: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs (a small or read-only disk)")


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_full_disk_is_refused_before_and_during_the_download(hub, repositories, tmp_path):
    small = tmp_path / "small"
    _mount_tmpfs(small, "4m")
    try:
        run = _cli(hub, "download", "hallo", "--to", str(small / "emo"))
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert "Not enough space in" in run.stderr and " needed, " in run.stderr and "--to" in run.stderr
        assert not (small / "emo" / "hallo").exists()
    finally:
        _unmount(small)
    # the disk fills while a file is in flight: the same plain message, nothing placed
    roomy = tmp_path / "roomy"
    _mount_tmpfs(roomy, "48m")
    try:
        hub.hold, hub.hold_after = (HALLO, "hallo/net.pth"), BLOCK + 4096
        partial = roomy / "emo" / STATE / "partial" / "fudan-generative-ai--hallo" / "hallo" / "net.pth"
        child = subprocess.Popen([*TINY_CLI, "download", "hallo", "--to", str(roomy / "emo")], env=_env(hub),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_for(lambda: partial.is_file() and partial.stat().st_size >= BLOCK, child)
        subprocess.run(["dd", "if=/dev/zero", f"of={roomy / 'filler'}", "bs=64k"], capture_output=True)  # until full
        hub.release.set()
        output, _ = child.communicate(timeout=900)
        assert child.returncode == 2 and "Traceback" not in output, output
        assert "Not enough space in" in output and "what was fetched so far is kept" in output
        assert not (roomy / "emo" / "hallo").exists()
    finally:
        _unmount(roomy)


def test_a_read_only_folder_is_a_plain_error(hub, tmp_path):
    locked = tmp_path / "locked"
    _mount_tmpfs(locked, "1m", read_only=True)
    try:
        with pytest.raises(DownloadError, match=r"Cannot write in .*locked.* \(it is read-only\): choose a folder"):
            download(["hallo"], locked / "emo")
    finally:
        _unmount(locked)


def test_offline_mode_works_with_the_files_and_says_what_to_run_without(hub, tmp_path):
    models = tmp_path / "emo"
    download(["echomimic-acc"], models)
    hub.requests.clear()
    run = _cli(hub, "download", "echomimic-acc", "--to", str(models), HF_HUB_OFFLINE="1")
    assert run.returncode == 0, run.stderr
    assert hub.requests == []
    run = _cli(hub, "download", "memo", "--to", str(models), HF_HUB_OFFLINE="1")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "HF_HUB_OFFLINE is set" in run.stderr and "python -m emo_pipeline download memo" in run.stderr
    assert hub.requests == []


@pytest.mark.parametrize("fault,message", [
    ("gated", r"is gated: accept its terms at http://127\.0\.0\.1:\d+/fudan-generative-ai/hallo"),
    ("missing file", r"has no file hallo/net\.pth at 'main': the repository has changed"),
    ("renamed repository", r"The repository fudan-generative-ai/hallo was not found"),
    ("revision", r"has no revision 'v9': give a branch, tag or commit"),
    ("no network", r"Could not reach http://127\.0\.0\.1:\d+ .*Check the network connection"),
])
def test_hub_faults_get_one_plain_sentence(fault, message, hub, tmp_path, monkeypatch):
    from emo_pipeline.cli import main

    revision = "main"
    if fault == "gated":
        hub.gated.add(HALLO)
    elif fault == "missing file":
        del hub.files[(HALLO, "hallo/net.pth")]
    elif fault == "renamed repository":
        for key in [k for k in hub.files if k[0] == HALLO]:
            del hub.files[key]
    elif fault == "revision":
        revision = "v9"
    else:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DownloadError, match=message):
        download(["hallo"], tmp_path / "emo", revision)
    assert not (tmp_path / "emo" / "hallo").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_files_in_the_way_are_kept_unless_forced(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    vae = models / "vae" / "config.json"
    vae.parent.mkdir(parents=True)
    vae.write_bytes(repositories[HALLO]["sd-vae-ft-mse/config.json"])  # the same file, put there by hand
    mine = models / "wav2vec" / "config.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"mine": true}')
    with pytest.raises(DownloadError, match=r"wav2vec/config.json exists and is not the hub's .* left as it is"):
        download(["hallo"], models)
    assert mine.read_text() == '{"mine": true}' and not (models / "hallo").exists()
    hub.requests.clear()
    result = download(["hallo"], models, force=True)
    assert "vae/config.json" in result.present  # equal to the hub's: recognised, not fetched
    assert "/fudan-generative-ai/hallo/resolve/main/sd-vae-ft-mse/config.json" not in hub.content_gets()
    assert json.loads(mine.read_text()) == json.loads(repositories[HALLO]["wav2vec/wav2vec2-base-960h/config.json"])


def test_convert_writes_our_single_file(hub, tmp_path):
    from emo_pipeline.io.loading import config_for, open_network

    result = download(["hallo2"], tmp_path / "emo", convert=True)
    assert result.converted == [tmp_path / "emo" / "hallo2.safetensors"]
    with open_network(result.converted[0]) as reader:
        assert config_for(reader).name == "hallo2"
        assert {reader.dtypes[k] for k in reader.keys()} == {torch.float16}


def test_convert_puts_echomimic_s_file_beside_its_whisper(hub, tmp_path):
    """EchoMimic's whisper_tiny.pt lies in its own folder (echomimic/audio_processor/), where the loader looks for it
    beside the network: so its converted file goes there too (at the model folder's top it would not find it)."""
    from emo_pipeline.components import load_pipeline

    result = download(["echomimic"], tmp_path / "emo", convert=True)
    assert result.converted == result.models == [tmp_path / "emo" / "echomimic" / "echomimic.safetensors"]
    assert load_pipeline(result.converted[0]).config.name == "echomimic"


def _safetensors_layout(path: Path) -> tuple[int, dict[str, tuple[str, int]]]:
    """A safetensors file's header length and each tensor's dtype and bytes, from its header."""
    import struct

    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return length, {k: (e["dtype"], e["data_offsets"][1] - e["data_offsets"][0]) for k, e in header.items()}


@pytest.mark.parametrize("variant", ["", "-acc"])
def test_echomimic_v2_is_converted_to_fp16_safetensors_after_its_download(variant, hub, repositories, tmp_path):
    """`download echomimic-v2` (and -acc) writes the network as our single fp16 safetensors file beside its files,
    without --convert: every key and shape of the folder (strict), each value the folder's in fp16, the pose
    encoder at its true size (values x 2 bytes) although the hub's pose_encoder.pth is POSE_BLOAT times larger; the
    .pth files stay, as placed. What --model gets and what loads is that file, and it gives the folder's weights."""
    from emo_pipeline.components import load_pipeline
    from emo_pipeline.io.loading import check_fits, config_for, expected_shapes, open_network

    name = "echomimic-v2" + variant
    models = tmp_path / "emo"
    result = download([name], models)
    target = models / "echomimic_v2" / f"{name}.safetensors"
    assert result.converted == result.models == [target]
    (conversion,) = result.conversions
    assert conversion.written and conversion.precision == "fp16" and conversion.size == target.stat().st_size
    assert conversion.said == (f"Converted the network to our single safetensors file: {target} (fp16, "
                               f"{human_size(target.stat().st_size)} for {conversion.values / 1e6:,.1f} M values).")
    mine = target.relative_to(models).as_posix()
    on_disk = {k: v for k, v in _tree(models).items() if not k.startswith(STATE + "/") and k != mine}
    assert on_disk == _expected([name], repositories)  # the downloaded files stay, unchanged

    with open_network(target) as ours, open_network(models / DOWNLOADS[name].model) as theirs:
        config = config_for(ours)
        assert config.name == name and config == config_for(theirs)
        check_fits(ours, config)  # strict: every key and shape, nothing else
        assert set(ours.keys()) == set(theirs.keys()) == set(expected_shapes(config))
        assert {ours.dtypes[k] for k in ours.keys()} == {torch.float16}
        for key in theirs.keys():
            assert torch.equal(ours.tensor(key), theirs.tensor(key).half()), key
        pose_values = sum(theirs.shapes[k].numel() for k in theirs.keys() if k.startswith("face_locator."))
    header, layout = _safetensors_layout(target)
    assert sum(b for k, (_, b) in layout.items() if k.startswith("face_locator.")) == 2 * pose_values  # true size
    assert target.stat().st_size == 8 + header + 2 * conversion.values  # the whole file: values x 2, and its header
    assert (models / "echomimic_v2" / "pose_encoder.pth").stat().st_size > POSE_BLOAT * 2 * pose_values

    converted = load_pipeline(target, dtype=torch.float16).net.state_dict()
    folder = load_pipeline(models / DOWNLOADS[name].model, dtype=torch.float16).net.state_dict()
    assert converted.keys() == folder.keys() and all(torch.equal(converted[k], folder[k]) for k in folder)


def test_a_second_echomimic_v2_download_keeps_its_converted_file(hub, tmp_path):
    """Run again (here through the command line), the download asks the hub nothing and the converted file, made from
    the same files (their sizes and times are in its metadata), is kept as it is: only its header is read (said in
    the command's one line). Once a source file is placed anew (its time changes), it is converted again; a file of
    the user's at that name is never overwritten."""
    models = tmp_path / "emo"
    (conversion,) = download(["echomimic-v2"], models).conversions
    first, before = conversion.path, conversion.path.stat()
    hub.requests.clear()
    result = _cli(hub, "download", "echomimic-v2", "--to", str(models))
    assert result.returncode == 0, result.stderr
    assert hub.requests == []
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    lines = result.stdout.splitlines()
    assert [line for line in lines if "onverted" in line] == [
        f"Converted network up to date with the downloaded files, kept: {first} (fp16, {human_size(before.st_size)} "
        f"for {conversion.values / 1e6:,.1f} M values)."]
    ready = next(i for i, line in enumerate(lines) if line.startswith("Ready: "))
    assert lines[ready].endswith(f"--model {first} --poses 01")  # v2 needs poses: a demo sequence's name
    assert "copy its demo sequences" in lines[ready + 1] and "download dwpose" in lines[ready + 1]

    pose = models / "echomimic_v2" / "pose_encoder.pth"
    os.utime(pose, ns=(pose.stat().st_atime_ns, pose.stat().st_mtime_ns + 10**9))  # as if placed anew
    again = download(["echomimic-v2"], models)
    assert again.conversions[0].written and first.stat().st_ino != before.st_ino

    mine = models / "echomimic_v2" / "echomimic-v2-acc.safetensors"
    mine.write_bytes(b"the user's own file")
    result = download(["echomimic-v2-acc"], models)
    assert mine.read_bytes() == b"the user's own file" and result.converted == []
    assert result.conversions[0].kept_foreign and "left as it is" in result.conversions[0].said
    assert result.models == [models / DOWNLOADS["echomimic-v2-acc"].model]  # the folder's files, then


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(DownloadError, match="Unknown download 'halo': choose from hallo, hallo2, echomimic"):
        download(["halo"], tmp_path)


def test_the_download_from_inside_comfyui(hub, repositories, tmp_path, monkeypatch):
    """Load EMO Model's 'download: hallo' entry: progress on the node, Cancel leaves nothing placed, the next
    run resumes and loads, and after that the entry loads the files without asking the hub."""
    import threading

    import comfy_stubs

    models = tmp_path / "models"
    state = comfy_stubs.install(models, tmp_path / "output")
    pack = comfy_stubs.load_pack()
    tiny_families.install(monkeypatch, sys.modules[pack.__name__ + ".emo_pipeline.io.loading"],
                          sys.modules[pack.__name__ + ".emo_pipeline.download.checks"],
                          importlib.import_module(pack.__name__ + ".emo_pipeline.audio.emotion"))
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    choices = loader.INPUT_TYPES()["required"]["checkpoint"][0]
    entry = next(c for c in choices if c.startswith("download: hallo "))
    assert {c.split(" ")[1] for c in choices if c.startswith("download: ")} == set(
        n for n, d in DOWNLOADS.items() if d.model)
    message = loader.VALIDATE_INPUTS("hallo/net.pth")  # a shipped workflow, files absent
    assert isinstance(message, str) and f"Pick '{entry}'" in message and "download hallo" in message
    assert loader.VALIDATE_INPUTS(entry) is True and loader.VALIDATE_INPUTS("download: hallo (~9 GB)") is True

    net = repositories[HALLO]["hallo/net.pth"]
    hub.hold, hub.hold_after = (HALLO, "hallo/net.pth"), BLOCK + 4096
    partial = models / "emo" / STATE / "partial" / "fudan-generative-ai--hallo" / "hallo" / "net.pth"

    def cancel_midway() -> None:
        deadline = time.monotonic() + 900
        while not (partial.is_file() and partial.stat().st_size >= BLOCK) and time.monotonic() < deadline:
            time.sleep(0.05)
        state.interrupted = True  # the Cancel button
        hub.release.set()

    canceller = threading.Thread(target=cancel_midway)
    canceller.start()
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        loader().load(entry, "auto", "auto")
    canceller.join()
    assert not (models / "emo" / "hallo").exists() and not (models / "emo" / "vae").exists()  # nothing placed
    assert state.progress and all(total == state.progress[0][1] for _, total, _ in state.progress)

    state.progress.clear()
    hub.requests.clear()
    model = loader().load(entry, "auto", "auto")[0]
    assert model.pipeline.config.name == "hallo" and (models / "emo" / "hallo" / "net.pth").read_bytes() == net
    values = [v for v, _, _ in state.progress]
    assert values == sorted(values) and values[-1] == state.progress[-1][1]  # the bar ran to its end
    assert any(r and r.startswith("bytes=") for m, p, r in hub.requests if m == "GET")  # resumed, not restarted
    assert "hallo/net.pth" in loader.INPUT_TYPES()["required"]["checkpoint"][0]
    assert entry not in loader.INPUT_TYPES()["required"]["checkpoint"][0]  # nothing left to fetch for it
    hub.requests.clear()
    assert loader().load(entry, "auto", "auto")[0].pipeline.config.name == "hallo"  # a saved workflow's entry
    assert hub.requests == []


def test_the_echomimic_v2_download_from_inside_comfyui_loads_its_converted_file(hub, repositories, tmp_path,
                                                                                  monkeypatch, caplog):
    """Load EMO Model's 'download: echomimic-v2' entry fetches the files, converts the network (said in one log
    line) and loads the converted file: its weights are the hub's rounded to fp16 (on the CPU, in fp32). The list
    then offers echomimic_v2/echomimic-v2.safetensors, not pose_encoder.pth (a part, as reference_unet.pth), and the
    entry of a saved workflow loads the same file again without asking the hub or converting again."""
    import logging

    import comfy_stubs
    from emo_pipeline.components import load_pipeline

    models = tmp_path / "models"
    comfy_stubs.install(models, tmp_path / "output")
    pack = comfy_stubs.load_pack()
    tiny_families.install(monkeypatch, sys.modules[pack.__name__ + ".emo_pipeline.io.loading"],
                          sys.modules[pack.__name__ + ".emo_pipeline.download.checks"],
                          importlib.import_module(pack.__name__ + ".emo_pipeline.audio.emotion"))
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    entry = next(c for c in loader.INPUT_TYPES()["required"]["checkpoint"][0]
                 if c.startswith("download: echomimic-v2 "))
    message = loader.VALIDATE_INPUTS("echomimic_v2/echomimic-v2.safetensors")  # a saved workflow, before the download
    assert isinstance(message, str) and f"Pick '{entry}'" in message and "download echomimic-v2 " in message
    with caplog.at_level(logging.INFO):
        model = loader().load(entry, "auto", "auto")[0]
    converted = models / "emo" / "echomimic_v2" / "echomimic-v2.safetensors"
    said = [r.getMessage() for r in caplog.records if "onverted" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith(f"EMO: Converted the network to our single safetensors file: {converted} (fp16, ")
    assert model.pipeline.config.name == "echomimic-v2" and model.pipeline.dtype == torch.float32
    hub_weights = load_pipeline(models / "emo" / "echomimic_v2").net.state_dict()  # the .pth files, fp32
    loaded = model.pipeline.net.state_dict()
    assert all(torch.equal(loaded[k], v.half().float()) for k, v in hub_weights.items())
    assert any(not torch.equal(loaded[k], v) for k, v in hub_weights.items())  # so the fp16 file is what was read
    listed = loader.INPUT_TYPES()["required"]["checkpoint"][0]
    assert "echomimic_v2/echomimic-v2.safetensors" in listed and "echomimic_v2/denoising_unet.pth" in listed
    assert not any(c.endswith(("pose_encoder.pth", "reference_unet.pth")) or c.startswith("download: echomimic-v2 ")
                   for c in listed)
    before = converted.stat()
    hub.requests.clear()
    assert loader().load(entry, "auto", "auto")[0].pipeline.config.name == "echomimic-v2"
    assert hub.requests == [] and (converted.stat().st_ino, converted.stat().st_mtime_ns) == (before.st_ino,
                                                                                           before.st_mtime_ns)


def test_the_separator_download_entry_from_inside_comfyui(hub, repositories, tmp_path):
    """EMO Separate Vocals without Kim_Vocal_2.onnx lists 'download: separator'; queued, the entry fetches
    Hallo's file into models/emo/audio_separator/, after which the list offers the file itself and the entry
    finds it without asking the hub."""
    import comfy_stubs

    comfy_stubs.install(tmp_path / "models", tmp_path / "output")
    node = comfy_stubs.load_pack().NODE_CLASS_MAPPINGS["EMOSeparateVocals"]
    (entry,) = node.INPUT_TYPES()["required"]["model"][0]
    assert entry.startswith("download: separator (~")
    path = Path(node._path(entry))
    assert path == tmp_path / "models" / "emo" / "audio_separator" / "Kim_Vocal_2.onnx"
    assert path.read_bytes() == repositories[HALLO]["audio_separator/Kim_Vocal_2.onnx"]
    assert node.INPUT_TYPES()["required"]["model"][0] == ["audio_separator/Kim_Vocal_2.onnx"]
    hub.requests.clear()
    assert node._path(entry) == str(path) and hub.requests == []


def test_a_cancelled_echomimic_v2_conversion_leaves_no_file_and_the_next_download_converts(hub, tmp_path):
    """Cancel (ComfyUI's, or Ctrl-C's flag on the command line) is asked before each tensor of the few-GB conversion:
    asked while converting, it stops there with nothing written (no file, no temporary), the downloaded files placed;
    the next download converts them without fetching anything."""
    models = tmp_path / "emo"
    asked = []

    def cancel_during_conversion() -> bool:
        asked.append(1)
        return (models / "echomimic_v2" / "pose_encoder.pth").exists() and len(asked) > 40

    with pytest.raises(DownloadCancelled):
        download(["echomimic-v2"], models, is_cancelled=cancel_during_conversion)
    target = models / DOWNLOADS["echomimic-v2"].converted
    assert not target.exists() and not list(target.parent.glob(f".{target.name}*"))
    assert missing_files(models, [DOWNLOADS["echomimic-v2"]]) == []  # the download itself was complete
    hub.requests.clear()
    result = download(["echomimic-v2"], models)
    assert hub.requests == [] and result.conversions[0].written and target.is_file()
