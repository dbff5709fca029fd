"""`download` against a hub that misbehaves as networks, mirrors and disks do in the field (tests/local_hub.py's
fault knobs): wrong content in every kind of part, sizes and hashes that lie, a body longer than announced, stalls,
trickles, cuts, a host that ignores ranges, full disks, hand-copied files offline, a changed revision, damaged files
left by an earlier version, and Cancel from ComfyUI. Each ends in a plain sentence (no traceback), places nothing that
failed a check, writes nothing outside the model folder, and the next call recovers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_families
from local_hub import LocalHub
from test_download import HALLO, _cli, _mount_tmpfs, _speech, _tree, _unmount
from test_download import repositories  # noqa: F401  (the fixture: the tiny files under each repository's names)
from emo_pipeline.download import DOWNLOADS, DownloadError, Limits, download, missing_files
from emo_pipeline.download.fetch import STATE

HALLO2 = "fudan-generative-ai/hallo2"
ECHO = "BadToBest/EchoMimic"
MEMO = "memoavatar/memo"
BIG = 20_000_000  # the separator, padded: a file large enough to cut, stall and trickle in
CUT = 3_000_000


def _pth(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _safetensors(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _big_separator(small: bytes, size: int) -> bytes:
    """Kim_Vocal_2's inputs and outputs, with an unused weight that brings the file to about `size` bytes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(small)
    padding = np.random.default_rng(1).standard_normal((size - len(small)) // 4).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(padding, "padding"))
    return model.SerializeToString()


@pytest.fixture(scope="module")
def upscaler_files():
    from emo_pipeline.upscale.codeformer import TemporalCodeFormer, tiny_codeformer_config
    from emo_pipeline.upscale.rrdbnet import RRDBNet, tiny_rrdb_config

    return {"hallo2/net_g.pth": _pth({"params_ema": TemporalCodeFormer(tiny_codeformer_config()).state_dict()}),
            "realesrgan/RealESRGAN_x2plus.pth": _pth({"params_ema": RRDBNet(tiny_rrdb_config()).state_dict()})}


@pytest.fixture(scope="module")
def big_separator(repositories):
    return _big_separator(repositories[HALLO]["audio_separator/Kim_Vocal_2.onnx"], BIG)


@pytest.fixture
def hub(repositories, upscaler_files, big_separator, monkeypatch):
    server = LocalHub()
    for repo, files in repositories.items():
        for path, data in files.items():
            server.add(repo, path, data)
    for path, data in upscaler_files.items():
        server.add(HALLO2, path, data)
    server.add(HALLO, "audio_separator/Kim_Vocal_2.onnx", big_separator)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for variable in ("EMO_DOWNLOAD_STALL_S", "EMO_DOWNLOAD_MIN_RATE", "EMO_DOWNLOAD_RATE_WINDOW_S"):
        monkeypatch.delenv(variable, raising=False)
    tiny_families.install(monkeypatch)
    yield server
    server.stop()


def _placed(models: Path) -> dict[str, bytes]:
    """The model folder as the loaders see it (the download's own state left out)."""
    return {k: v for k, v in _tree(models).items() if not k.startswith(STATE + "/")} if models.is_dir() else {}


def _staged(models: Path) -> list[str]:
    return [k for k in _tree(models / STATE) if k.startswith(("partial/", "verified/", "check/"))] \
        if (models / STATE).is_dir() else []


def _record(models: Path) -> dict:
    path = models / STATE / "placed.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _partial(models: Path, repo: str, path: str) -> Path:
    return models / STATE / "partial" / repo.replace("/", "--") / path


def _serve(hub: LocalHub, repo: str, path: str, data: bytes) -> None:
    hub.add(repo, path, data)
    hub.refresh()


def _random(n: int, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------------------- wrong content in every part
def _wrong(kind: str, repositories) -> bytes:
    if kind == "random":
        return _random(40_000)
    if kind == "foreign keys pth":
        return _pth({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)})
    if kind == "foreign keys safetensors":
        return _safetensors({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)})
    if kind == "arcface onnx":
        return repositories[HALLO]["face_analysis/models/glintr100.onnx"]
    if kind == "scrfd onnx":
        return repositories[HALLO]["face_analysis/models/scrfd_10g_bnkps.onnx"]
    if kind == "whisper without dims":
        return _pth({"model_state_dict": {"encoder.conv1.weight": torch.zeros(2, 2)}, "dims": {}})
    if kind == "realesrgan for codeformer":
        from emo_pipeline.upscale.rrdbnet import RRDBNet, tiny_rrdb_config

        return _pth({"params_ema": RRDBNet(tiny_rrdb_config()).state_dict()})
    raise AssertionError(kind)


WRONG = [  # (download, repository, path, wrong content, what the message names)
    ("hallo", HALLO, "hallo/net.pth", "foreign keys pth", r"hallo \(network: hallo/net\.pth\) is damaged: .*net\.pth"),
    ("hallo", HALLO, "hallo/net.pth", "random", r"hallo \(network.*is damaged: .*net\.pth is damaged: its pickle"),
    ("hallo", HALLO, "sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "random", r"vae \(vae\) is damaged"),
    ("hallo", HALLO, "sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "foreign keys safetensors",
     r"vae \(vae\) is damaged: diffusion_pytorch_model\.safetensors does not fit its config\.json: .*missing"),
    ("hallo", HALLO, "wav2vec/wav2vec2-base-960h/model.safetensors", "foreign keys safetensors",
     r"wav2vec \(wav2vec\) is damaged: model\.safetensors does not fit its config\.json"),
    ("echomimic", ECHO, "audio_processor/whisper_tiny.pt", "random", r"whisper_tiny\.pt \(whisper\) is damaged"),
    ("echomimic", ECHO, "audio_processor/whisper_tiny.pt", "whisper without dims",
     r"whisper_tiny\.pt \(whisper\) is damaged: .*no usable whisper dims"),
    ("echomimic", ECHO, "motion_module.pth", "foreign keys pth", r"echomimic \(network: .*motion_module\.pth"),
    ("memo", MEMO, "diffusion_net/diffusion_pytorch_model.safetensors", "foreign keys safetensors",
     r"memo \(network: .*is damaged"),
    ("face", HALLO, "face_analysis/models/scrfd_10g_bnkps.onnx", "arcface onnx",
     r"scrfd_10g_bnkps\.onnx \(scrfd\) is damaged: not an SCRFD detector"),
    ("face", HALLO, "face_analysis/models/glintr100.onnx", "random",
     r"glintr100\.onnx \(arcface\) is damaged: not a readable ONNX model"),
    ("separator", HALLO, "audio_separator/Kim_Vocal_2.onnx", "scrfd onnx",
     r"Kim_Vocal_2\.onnx \(separator\) is damaged: not a Kim_Vocal_2-style MDX separator"),
    ("hallo2-upscaler", HALLO2, "hallo2/net_g.pth", "realesrgan for codeformer",
     r"net_g\.pth \(codeformer\) is damaged: not Hallo2's temporal CodeFormer"),
    ("hallo2-upscaler", HALLO2, "realesrgan/RealESRGAN_x2plus.pth", "random",
     r"RealESRGAN_x2plus\.pth \(realesrgan\) is damaged"),
]


@pytest.mark.parametrize("name,repo,path,wrong,message", WRONG,
                         ids=[f"{w[0]}:{w[2].rsplit('/', 1)[-1]}:{w[3]}" for w in WRONG])
def test_a_part_that_fails_its_check_is_never_placed_and_the_next_call_fetches_it(
        name, repo, path, wrong, message, hub, repositories, tmp_path):
    good = hub.files[(repo, path)]
    _serve(hub, repo, path, _wrong(wrong, repositories))
    models = tmp_path / "models" / "emo"
    with pytest.raises(DownloadError, match=message) as refused:
        download([name], models)
    assert "Nothing was placed" in str(refused.value) and "carries code" not in str(refused.value)
    assert _placed(models) == {}  # the folder the loaders read is untouched
    assert _record(models) == {}  # nothing recorded: the next call fetches again
    target = next(f.target for f in DOWNLOADS[name].files if f.path == path)
    assert not any(k.endswith(target) for k in _staged(models))  # the failing file left staging
    assert os.listdir(tmp_path) == ["models"] and os.listdir(tmp_path / "models") == ["emo"]  # nothing outside --to
    assert [f.target for f in missing_files(models, [DOWNLOADS[name]])] == [f.target for f in DOWNLOADS[name].files]

    _serve(hub, repo, path, good)  # the hub mends its file
    hub.requests.clear()
    result = download([name], models)
    assert _placed(models)[target] == good
    assert sorted(result.placed) == sorted(f.target for f in DOWNLOADS[name].files)
    assert missing_files(models, [DOWNLOADS[name]]) == []
    fetched_again = [p for m, p, _ in hub.requests if m == "GET"]
    assert fetched_again  # the refused file was fetched anew, not taken from a record


def test_after_a_refused_network_the_command_line_recovers_and_renders(hub, tmp_path):
    """The reported case: a damaged net.pth used to be placed, recorded, and refused forever after."""
    good = hub.files[(HALLO, "hallo/net.pth")]
    _serve(hub, HALLO, "hallo/net.pth", _random(len(good)))
    models = tmp_path / "emo"
    run = _cli(hub, "download", "hallo", "--to", str(models))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "Nothing was placed" in run.stderr and "net.pth is damaged" in run.stderr
    assert not (models / "hallo" / "net.pth").exists()
    for forced in ([], ["--force"]):  # the same refusal each time the hub serves the same bytes
        again = _cli(hub, "download", "hallo", "--to", str(models), *forced)
        assert again.returncode == 2 and "net.pth is damaged" in again.stderr and "Traceback" not in again.stderr
    _serve(hub, HALLO, "hallo/net.pth", good)
    run = _cli(hub, "download", "hallo", "--to", str(models))
    assert run.returncode == 0, run.stderr
    assert "Ready: python -m emo_pipeline generate" in run.stdout
    out = tmp_path / "video.mp4"
    render = _cli(hub, "generate", "--model", str(models / "hallo"), "--out", str(out), "--steps", "2",
                  "--audio", str(_speech(tmp_path, 0.4)))
    assert render.returncode == 0, render.stderr
    from emo_pipeline.io.media import read_video_info

    assert read_video_info(out)["frame_count"] == 10  # 0.4 s at 25 fps


# ---------------------------------------------------------------------------- what the hub and the host say
@pytest.mark.parametrize("lie", [+1000, -1000])
def test_a_size_that_disagrees_with_the_body_is_said_and_the_next_call_starts_afresh(lie, hub, repositories, tmp_path):
    key = (HALLO, "sd-vae-ft-mse/diffusion_pytorch_model.safetensors")
    hub.lie_size[key] = len(hub.files[key]) + lie
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=r"announced .* for sd-vae-ft-mse/diffusion_pytorch_model\.safetensors "
                                            r"but sends .*Run the command again to fetch it afresh"):
        download(["hallo"], models)
    assert not _partial(models, *key).exists() and _placed(models) == {}
    del hub.lie_size[key]
    hub.requests.clear()
    download(["hallo"], models)
    gets = [r for m, p, r in hub.requests if m == "GET" and p.startswith("/cdn/")]
    assert all(r is None for r in gets)  # afresh: no range into a partial that could never complete
    assert _placed(models)["vae/diffusion_pytorch_model.safetensors"] == repositories[HALLO][key[1]]


def test_a_hash_that_lies_is_caught_and_nothing_is_kept(hub, tmp_path):
    key = (HALLO, "wav2vec/wav2vec2-base-960h/config.json")  # a small file: a git blob hash
    hub.lie_hash.add(key)
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=r"config\.json from fudan-generative-ai/hallo arrived damaged \(its git "
                                            r"hash is not the hub's\)"):
        download(["hallo"], models)
    assert _placed(models) == {} and not _partial(models, *key).exists()


@pytest.mark.parametrize("mode", ["length", "unannounced"])
def test_a_body_longer_than_announced_is_refused_and_nothing_is_left(mode, hub, tmp_path):
    key = (HALLO, "face_analysis/models/glintr100.onnx")
    hub.longer[key] = mode
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=rf"http://127\.0\.0\.1:{hub.cdn.server_address[1]} \(where .* sends large "
                                            r"files\) announced .* for face_analysis/models/glintr100\.onnx but sends"):
        download(["face"], models)
    assert not _partial(models, *key).exists() and _placed(models) == {}
    assert not [k for k in _staged(models) if "glintr100" in k]


def test_a_stall_is_a_plain_error_that_keeps_what_arrived(hub, big_separator, tmp_path):
    key = (HALLO, "audio_separator/Kim_Vocal_2.onnx")
    hub.hold, hub.hold_after = key, CUT
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=r"sent nothing for 1 s while sending audio_separator/Kim_Vocal_2\.onnx "
                                            r"\(3\.0 MB of 20 MB\): the transfer stalled\. What arrived is kept"):
        download(["separator"], models, limits=Limits(stall_s=1))
    assert _partial(models, *key).stat().st_size == CUT
    hub.release.set()
    hub.requests.clear()
    download(["separator"], models)
    assert f"bytes={CUT}-" in [r for m, _, r in hub.requests if m == "GET"]
    assert _placed(models)["audio_separator/Kim_Vocal_2.onnx"] == big_separator


def test_a_trickle_is_stopped_with_a_plain_error(hub, tmp_path):
    key = (HALLO, "audio_separator/Kim_Vocal_2.onnx")
    hub.trickle[key] = (2**20, 0.05)  # a MiB, then a byte every 50 ms: 20 B/s, which never trips a read timeout
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=r"sends audio_separator/Kim_Vocal_2\.onnx at \d+ B/s over the last \d+ s, "
                                            r"far too slow to finish"):
        download(["separator"], models, limits=Limits(window_s=3, min_rate=1000))
    assert _partial(models, *key).stat().st_size >= 2**20  # what arrived is kept for a resume


def test_a_cut_at_3_mb_resumes_at_3_mb(hub, big_separator, tmp_path):
    key = (HALLO, "audio_separator/Kim_Vocal_2.onnx")
    hub.cut[key] = [CUT, 1]
    models = tmp_path / "emo"
    result = download(["separator"], models)
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.startswith("/cdn/")]
    assert ranges == [None, f"bytes={CUT}-"]
    assert result.fetched_bytes == len(big_separator)
    assert _placed(models)["audio_separator/Kim_Vocal_2.onnx"] == big_separator


def test_a_connection_that_keeps_breaking_keeps_every_byte_for_the_next_call(hub, big_separator, tmp_path):
    key = (HALLO, "audio_separator/Kim_Vocal_2.onnx")
    hub.cut[key] = [CUT, 100]  # every transfer ends at 3 MB
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=r"broke off at 3\.0 MB of audio_separator/Kim_Vocal_2\.onnx \(20 MB\)\. "
                                            r"What arrived is kept"):
        download(["separator"], models)
    assert _partial(models, *key).stat().st_size == CUT  # to the byte, not whole 10 MiB chunks
    hub.cut.clear()
    hub.requests.clear()
    result = download(["separator"], models)
    assert [r for m, p, r in hub.requests if m == "GET"] == [f"bytes={CUT}-"]
    assert result.fetched_bytes == len(big_separator) - CUT
    assert _placed(models)["audio_separator/Kim_Vocal_2.onnx"] == big_separator


class Recorder:
    def __init__(self):
        self.total, self.files, self.net, self.calls = 0, [], 0, 0

    def start(self, total_bytes, files):
        self.total = total_bytes

    def file(self, name, size, done):
        self.files.append((name, size, done))
        self.net += done

    def advance(self, n):
        self.net += n
        self.calls += 1

    def finish(self):
        pass


def test_a_host_that_ignores_ranges_is_read_from_the_start_and_counted_right(hub, big_separator, tmp_path):
    key = (HALLO, "audio_separator/Kim_Vocal_2.onnx")
    hub.cut[key] = [CUT, 1]
    hub.ignore_range.add(key)
    models = tmp_path / "emo"
    progress = Recorder()
    result = download(["separator"], models, progress=progress)
    assert result.fetched_bytes == CUT + len(big_separator)  # what really came over the network
    assert progress.net == progress.total == len(big_separator)  # the bar ends at the file's size, not above
    assert progress.calls >= len(big_separator) // 2**20  # reported at least every MiB
    assert _placed(models)["audio_separator/Kim_Vocal_2.onnx"] == big_separator


def test_a_large_file_host_that_is_down_is_named_not_the_hub(hub, tmp_path):
    cdn = f"http://127.0.0.1:{hub.cdn.server_address[1]}"
    hub.cdn.shutdown()
    hub.cdn.server_close()
    with pytest.raises(DownloadError, match=rf"Could not reach {cdn} \(where {hub.endpoint} sends large files\)"):
        download(["face"], tmp_path / "emo")
    assert _placed(tmp_path / "emo") == {}


# ---------------------------------------------------------------------------- disks
def test_a_full_disk_at_any_point_is_a_plain_error_and_the_next_call_recovers(hub, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "24m")
    models = disk / "emo"
    filler = disk / "filler"

    class FillsTheDisk(Recorder):
        def finish(self):  # every byte is fetched: the disk fills before the checks, placing and the record
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)

    try:
        with pytest.raises(DownloadError, match=r"(No space left in|Not enough space in) .*emo"):
            download(["face"], models, progress=FillsTheDisk())
        for _ in range(2):  # on the full disk, every later call says so plainly too
            with pytest.raises(DownloadError, match=r"(No space left in|Not enough space in) .*emo.* free"):
                download(["face"], models)
        filler.unlink()
        result = download(["face"], models)
        assert sorted(result.placed + result.present) == sorted(f.target for f in DOWNLOADS["face"].files)
        assert missing_files(models, [DOWNLOADS["face"]]) == []
    finally:
        _unmount(disk)


def test_a_full_disk_message_gives_the_true_figure(hub, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        with pytest.raises(DownloadError) as full:
            download(["separator"], disk / "emo")
        assert __import__("re").search(r"Not enough space in .*emo: 2[01] MB needed, [\d.]+ MB free", str(full.value))
    finally:
        _unmount(disk)


# ---------------------------------------------------------------------------- what is on disk already
def test_offline_hand_copied_files_are_checked_not_called_missing(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    for f in DOWNLOADS["echomimic-acc"].files:  # copied in by hand from another machine: no record
        path = models / f.target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(repositories[f.repo][f.path])
    hub.requests.clear()
    run = _cli(hub, "download", "echomimic-acc", "--to", str(models), HF_HUB_OFFLINE="1")
    assert run.returncode == 0, run.stderr
    assert hub.requests == [] and "were there already" in run.stdout and "Ready:" in run.stdout
    # one of them damaged on disk: named as damaged, not as missing
    whisper = models / "echomimic" / "audio_processor" / "whisper_tiny.pt"
    whisper.write_bytes(_random(whisper.stat().st_size))
    run = _cli(hub, "download", "echomimic-acc", "--to", str(models), HF_HUB_OFFLINE="1")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "whisper_tiny.pt" in run.stderr and "missing" not in run.stderr and "--force" in run.stderr
    assert hub.requests == []


def test_a_changed_revision_is_compared_with_the_record(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    download(["hallo"], models)
    with pytest.raises(DownloadError, match="has no revision 'v9'"):  # was "Ready" with no request
        download(["hallo"], models, "v9")
    config = json.loads(repositories[HALLO]["sd-vae-ft-mse/config.json"]) | {"sample_size": 512}
    hub.revisions["v2"] = {(HALLO, "sd-vae-ft-mse/config.json"): json.dumps(config).encode()}
    hub.refresh()
    hub.requests.clear()
    result = download(["hallo"], models, "v2")
    assert result.placed == ["vae/config.json"]  # only what differs at v2
    assert [p for m, p, _ in hub.requests if m == "GET"] == ["/fudan-generative-ai/hallo/resolve/v2/sd-vae-ft-mse/config.json"]
    assert json.loads((models / "vae" / "config.json").read_text())["sample_size"] == 512
    hub.requests.clear()
    download(["hallo"], models, "v2")
    assert hub.requests == []  # recorded at v2 now
    download(["hallo"], models)
    assert hub.requests == []  # no revision asked: what is placed is kept


def test_a_damaged_file_from_an_earlier_version_is_named_and_force_replaces_it(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    download(["hallo"], models)
    record = _record(models)
    for entry in record.values():
        del entry["checked"]  # as an earlier version recorded them: placed, never content-checked
    vae = models / "vae" / "diffusion_pytorch_model.safetensors"
    vae.write_bytes(b"\xff" * 8 + _random(vae.stat().st_size - 8))  # damaged on disk ("header too large")
    stat = vae.stat()
    record["vae/diffusion_pytorch_model.safetensors"].update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    (models / STATE / "placed.json").write_text(json.dumps(record))
    assert "vae/diffusion_pytorch_model.safetensors" in [f.target for f in missing_files(models, [DOWNLOADS["hallo"]])]
    with pytest.raises(DownloadError, match=r"diffusion_pytorch_model\.safetensors is damaged \(.*\): left as it is\. "
                                            r"Run `python -m emo_pipeline download hallo --force`"):
        download(["hallo"], models)
    result = download(["hallo"], models, force=True)
    assert result.placed == ["vae/diffusion_pytorch_model.safetensors"]
    assert vae.read_bytes() == repositories[HALLO]["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
    assert missing_files(models, [DOWNLOADS["hallo"]]) == []


def test_a_working_file_of_the_users_own_is_kept_even_when_damaged_ones_are_replaced(hub, repositories, tmp_path):
    models = tmp_path / "emo"
    mine = models / "face_analysis" / "models" / "glintr100.onnx"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(_tiny_arcface(seed=5))  # a working ArcFace, not the hub's
    with pytest.raises(DownloadError, match=r"glintr100\.onnx exists and is not the hub's"):
        download(["face"], models, replace_damaged=True)
    assert mine.read_bytes() == _tiny_arcface(seed=5)


def _tiny_arcface(seed: int) -> bytes:
    import tempfile

    from test_face import arcface_model

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.onnx"
        arcface_model(path, np.random.default_rng(seed).standard_normal((3, 512)).astype(np.float32))
        return path.read_bytes()


# ---------------------------------------------------------------------------- ComfyUI
@pytest.fixture
def comfy(hub, tmp_path, monkeypatch):
    import comfy_stubs

    state = comfy_stubs.install(tmp_path / "models", tmp_path / "output")
    pack = comfy_stubs.load_pack()
    tiny_families.install(monkeypatch, sys.modules[pack.__name__ + ".emo_pipeline.io.loading"],
                          sys.modules[pack.__name__ + ".emo_pipeline.download.checks"])
    return state, pack, comfy_stubs


def test_the_download_entry_stays_offered_while_the_model_does_not_load(comfy, hub, tmp_path):
    state, pack, stubs = comfy
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    good = hub.files[(HALLO, "hallo/net.pth")]
    _serve(hub, HALLO, "hallo/net.pth", _pth({"encoder.weight": torch.zeros(2)}))
    entry = next(c for c in loader.INPUT_TYPES()["required"]["checkpoint"][0] if c.startswith("download: hallo "))
    with pytest.raises(Exception, match="Nothing was placed"):
        loader().load(entry, "auto", "auto")
    assert entry in loader.INPUT_TYPES()["required"]["checkpoint"][0]  # still offered
    # a damaged net.pth copied in by hand: the entry, when picked, replaces it (the loader could not use it)
    net = tmp_path / "models" / "emo" / "hallo" / "net.pth"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_bytes(_random(5000))
    _serve(hub, HALLO, "hallo/net.pth", good)
    assert entry in loader.INPUT_TYPES()["required"]["checkpoint"][0]
    model = loader().load(entry, "auto", "auto")[0]
    assert model.pipeline.config.name == "hallo" and net.read_bytes() == good
    assert entry not in loader.INPUT_TYPES()["required"]["checkpoint"][0]


@pytest.mark.parametrize("pace", ["200 kB/s", "trickle"])
def test_cancel_from_comfyui_acts_at_once_at_any_pace(pace, comfy, hub, tmp_path):
    state, pack, stubs = comfy
    node = pack.NODE_CLASS_MAPPINGS["EMOSeparateVocals"]
    key = (HALLO, "audio_separator/Kim_Vocal_2.onnx")
    if pace == "trickle":
        hub.trickle[key] = (256 * 1024, 2.0)  # a byte every 2 s after 256 kB
    else:
        hub.rate[key] = 200_000
    partial = _partial(tmp_path / "models" / "emo", *key)
    pressed = {}
    watchdog = threading.Timer(120, hub.release.set)  # ends the trickle if Cancel is never acted on
    watchdog.start()

    def press_cancel() -> None:
        deadline = time.monotonic() + 120
        while not (partial.is_file() and partial.stat().st_size >= 256 * 1024) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # into the trickle (or on at 200 kB/s)
        pressed["at"], pressed["bytes"] = time.monotonic(), hub.sent
        state.interrupted = True  # the Cancel button

    canceller = threading.Thread(target=press_cancel)
    canceller.start()
    (entry,) = node.INPUT_TYPES()["required"]["model"][0]
    try:
        with pytest.raises(stubs.InterruptProcessingException):
            node._path(entry)
        stopped = time.monotonic()
    finally:
        watchdog.cancel()
        canceller.join()
    latency = stopped - pressed["at"]
    print(f"\n{pace}: Cancel acted after {latency:.2f} s")
    # the old loop looked at Cancel once per 10 MiB (about 50 s at 200 kB/s; never in a trickle): what the hub sent
    # after the press bounds how long the client went on reading
    assert hub.sent - pressed["bytes"] < 4 * 200_000
    assert not (tmp_path / "models" / "emo" / "audio_separator").exists()  # nothing placed
    assert partial.stat().st_size >= 256 * 1024  # what arrived stays for the next run
