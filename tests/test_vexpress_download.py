"""`download v-express` from a hub on 127.0.0.1 (tests/local_hub.py) serving fake files under V-Express's real
repository and paths: tk93/V-Express's five .bin files (fp16 state dicts under V-Express's own key names, from
tests/data/vexpress_keys.tsv; tensors of more than SMALL values stored as one value, since the checks read names and
the shapes of small tensors only) and Hallo's VAE, wav2vec2-base-960h and SCRFD detector (fudan-generative-ai/hallo).
Exactly those files are placed, in v-express/ and beside it; a file that is not the network it is named for, or a
pickle that carries code, is refused and nothing is placed; the licence is said before the hub is asked anything, on the
command line and in ComfyUI; a cut transfer resumes where it stopped."""

from __future__ import annotations

import io
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from local_hub import serving
from test_download import _cli, _tree
from test_download_faults import Recorder, _partial, _placed, _random, _record, _serve, _staged
from emo_pipeline.download import DOWNLOADS, DownloadError, download, missing_files
from emo_pipeline.download.checks import VEXPRESS_KEYS
from emo_pipeline.download.fetch import STATE
from emo_pipeline.config import tiny_config
from emo_pipeline.tiny import tiny_components
from test_face import arcface_model, scrfd_model
from test_hallo_layout import read_reference_keys

VEXPRESS, HALLO = "tk93/V-Express", "fudan-generative-ai/hallo"
KEYS = Path(__file__).parent / "data" / "vexpress_keys.tsv"
NETWORKS = ("reference_net", "denoising_unet", "motion_module", "v_kps_guider", "audio_projection")
SMALL = 16_384  # tensors up to this many values keep their true shape (the guider keeps all: 1.09 M values in all)
LICENCE = "Licence of v-express: V-Express's weights for non-commercial research only"
# What the repositories hold besides: never asked for (V-Express's own copies of the base files, Hallo's others).
UNREAD = {
    VEXPRESS: ["README.md", "model_ckpts/sd-vae-ft-mse/diffusion_pytorch_model.bin",
               "model_ckpts/wav2vec2-base-960h/pytorch_model.bin",
               "model_ckpts/insightface_models/models/buffalo_l/det_10g.onnx",
               "model_ckpts/stable-diffusion-v1-5/unet/config.json"],
    HALLO: ["hallo/net.pth", "face_analysis/models/glintr100.onnx", "audio_separator/Kim_Vocal_2.onnx"],
}


def read_keys() -> dict[str, dict[str, tuple[int, ...]]]:
    """V-Express's key list: {network: {key: shape}}, motion_module.bin's being denoising_unet's motion part."""
    networks: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in read_reference_keys(KEYS).items():  # "<network>.<key>", as Hallo's list reads
        network, key = name.split(".", 1)
        networks.setdefault(network, {})[key] = shape
    networks["motion_module"] = {k: s for k, s in networks["denoising_unet"].items() if ".motion_modules." in k}
    return networks


def fake_bin(shapes: dict[str, tuple[int, ...]], seed: int, keep_all: bool = False) -> bytes:
    """A torch.save'd fp16 state dict under these names, as the hub's files are (values random, so no two files are
    the same blob)."""
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s if keep_all or math.prod(s) <= SMALL else (1,), generator=generator).half()
             for k, s in shapes.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class WritesOnLoad:
    """Unpickled, it would make a folder: the proof that code in a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.makedirs, (str(self.marker),))


@pytest.fixture(scope="module")
def keys():
    return read_keys()


@pytest.fixture(scope="module")
def repositories(keys, tmp_path_factory):
    work = tmp_path_factory.mktemp("vexpress-repos")
    _, vae, encoder = tiny_components(tiny_config())
    vae.save_pretrained(work / "vae")
    encoder.model.save_pretrained(work / "wav2vec")
    (work / "wav2vec" / "preprocessor_config.json").write_text(
        '{"do_normalize": true, "feature_size": 1, "padding_value": 0.0, "sampling_rate": 16000}')
    scrfd_model(work / "scrfd_10g_bnkps.onnx")
    arcface_model(work / "glintr100.onnx", np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32))
    repos = {
        VEXPRESS: {f"{n}.bin": fake_bin(keys[n], seed, keep_all=n == "v_kps_guider")
                   for seed, n in enumerate(NETWORKS)},
        HALLO: {f"sd-vae-ft-mse/{k}": v for k, v in _tree(work / "vae").items()}
        | {f"wav2vec/wav2vec2-base-960h/{k}": v for k, v in _tree(work / "wav2vec").items()}
        | {"face_analysis/models/scrfd_10g_bnkps.onnx": (work / "scrfd_10g_bnkps.onnx").read_bytes()},
    }
    for repo, paths in UNREAD.items():
        for path in paths:
            repos[repo][path] = b"never read by our loaders " + path.encode()
    repos[HALLO]["face_analysis/models/glintr100.onnx"] = (work / "glintr100.onnx").read_bytes()
    return repos


@pytest.fixture
def hub(repositories, monkeypatch):
    with serving(repositories, monkeypatch) as server:
        yield server


EXPECTED = ["v-express/reference_net.bin", "v-express/denoising_unet.bin", "v-express/motion_module.bin",
            "v-express/v_kps_guider.bin", "v-express/audio_projection.bin", "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors", "wav2vec/config.json", "wav2vec/preprocessor_config.json",
            "wav2vec/model.safetensors", "face_analysis/models/scrfd_10g_bnkps.onnx"]


def test_the_checks_name_v_express_s_own_keys_and_shapes(keys):
    """Each check's keys (written out in checks.py, which reads nothing under tests/) are in V-Express's key list,
    built from its code, with these shapes; the guider's check is its whole layout."""
    for network, expected in VEXPRESS_KEYS.items():
        assert expected and all(keys[network].get(k) == s for k, s in expected.items()), network
    assert VEXPRESS_KEYS["v_kps_guider"] == keys["v_kps_guider"]
    assert len(keys["motion_module"]) == 588


def test_v_express_places_exactly_its_files_and_says_its_licence_first(hub, repositories, tmp_path):
    models = tmp_path / "models" / "emo"
    said = []

    class Watching(Recorder):
        def notice(self, text):  # what the hub had been asked when the licence was said
            said.append((text, list(hub.requests), self.total))

    result = download(["v-express"], models, progress=Watching())
    placed = {k: v for k, v in _tree(models).items() if not k.startswith(STATE + "/")}
    assert placed == {f.target: repositories[f.repo][f.path] for f in DOWNLOADS["v-express"].files}
    assert sorted(placed) == sorted(EXPECTED) and sorted(result.placed) == sorted(EXPECTED)
    assert result.models == [models / "v-express"] and result.converted == []
    unread = {f"/{repo}/resolve/main/{p}" for repo, paths in UNREAD.items() for p in paths}
    assert not unread & set(hub.content_gets())
    assert missing_files(models, [DOWNLOADS["v-express"]]) == []
    (text, asked, started), = said
    assert text.startswith(LICENCE) and "non-commercial research purposes" in text and "SCRFD" in text
    assert asked == [] and started == 0  # before any request, before the transfer began

    # a user with Hallo's files already: the same targets, recorded; only V-Express's own five are new
    hub.requests.clear()
    said.clear()
    again = download(["v-express"], models, progress=Watching())
    assert hub.requests == [] and again.placed == [] and said == []  # nothing to fetch: nothing said


def test_hallo_s_base_files_are_shared(hub, tmp_path):
    """The VAE, wav2vec2 and SCRFD are Hallo's download's own entries (repository, path, target): a folder that has
    them from Hallo (here the SCRFD, through `download face`) does not fetch them again."""
    shared = [f for f in DOWNLOADS["v-express"].files if not f.target.startswith("v-express/")]
    assert len(shared) == 6 and set(shared) <= set(DOWNLOADS["hallo"].files)
    models = tmp_path / "emo"
    download(["face"], models)
    hub.requests.clear()
    result = download(["v-express"], models)
    assert result.present == ["face_analysis/models/scrfd_10g_bnkps.onnx"]
    assert sorted(result.placed) == sorted(t for t in EXPECTED if t not in result.present)
    assert not any("scrfd" in p for m, p, _ in hub.requests)


def _code_pickle(keys, marker: Path) -> bytes:
    state = {k: torch.zeros(s if math.prod(s) <= SMALL else (1,)).half() for k, s in keys["audio_projection"].items()}
    state["latents"] = WritesOnLoad(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


WRONG = [  # (file served wrong, what is served instead, what the message says)
    ("denoising_unet.bin", "reference_net.bin",
     r"v-express/denoising_unet\.bin \(vexpress_denoising_unet\) is damaged: not V-Express's denoising UNet "
     r"\(684 tensors\): 6 of its keys missing "
     r"\(conv_norm_out\.weight, .*norm1_5"),
    ("reference_net.bin", "denoising_unet.bin",
     r"v-express/reference_net\.bin \(vexpress_reference_net\) is damaged: not V-Express's ReferenceNet "
     r"\(1386 tensors\): 700 keys it must not hold"),
    ("motion_module.bin", "denoising_unet.bin",
     r"motion_module\.bin \(vexpress_motion_module\) is damaged: not V-Express's motion modules .*798 keys it must "
     r"not hold \(conv_in\.bias"),
    ("audio_projection.bin", "v_kps_guider.bin",
     r"audio_projection\.bin \(vexpress_audio_projection\) is damaged: not V-Express's audio projection .*6 of its keys"),
    ("v_kps_guider.bin", "narrow guider",
     r"v_kps_guider\.bin \(vexpress_v_kps_guider\) is damaged: .*wrong shapes: conv_in\.weight \[16, 4, 3, 3\] "
     r"\(expected \[16, 3, 3, 3\]\)"),
    ("audio_projection.bin", "code", r"audio_projection\.bin \(vexpress_audio_projection\) is damaged: Refused "
                                     r"v-express/audio_projection\.bin: it is a pickle that carries code"),
    ("reference_net.bin", "random", r"reference_net\.bin \(vexpress_reference_net\) is damaged: .*damaged"),
]


@pytest.mark.parametrize("path,served,message", WRONG, ids=[f"{w[0]}:{w[1]}" for w in WRONG])
def test_a_file_that_is_not_its_network_is_refused_and_nothing_is_placed(path, served, message, hub, repositories,
                                                                          keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "code-ran"
    good = repositories[VEXPRESS][path]
    if served == "code":
        wrong = _code_pickle(keys, marker)
    elif served == "random":
        wrong = _random(len(good) // 4)
    elif served == "narrow guider":  # 4 input channels where the guider draws 3
        wrong = fake_bin(keys["v_kps_guider"] | {"conv_in.weight": (16, 4, 3, 3)}, 9, keep_all=True)
    else:
        wrong = repositories[VEXPRESS][served]
    _serve(hub, VEXPRESS, path, wrong)
    models = tmp_path / "models" / "emo"
    with pytest.raises(DownloadError, match=message) as refused:
        download(["v-express"], models)
    assert "Nothing was placed" in str(refused.value)
    assert not marker.exists()  # the pickle's code never ran
    assert _placed(models) == {} and _record(models) == {}
    assert not any(k.endswith(f"v-express/{path}") for k in _staged(models))  # the failing file left staging
    assert sorted(f.target for f in missing_files(models, [DOWNLOADS["v-express"]])) == sorted(EXPECTED)

    _serve(hub, VEXPRESS, path, good)  # the hub mends its file
    result = download(["v-express"], models)
    assert _placed(models)[f"v-express/{path}"] == good and sorted(result.placed) == sorted(EXPECTED)


def test_the_command_line_says_the_licence_before_fetching(hub, tmp_path):
    models = tmp_path / "emo"
    run = _cli(hub, "download", "v-express", "--to", str(models))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stderr.splitlines()
    licence = next(i for i, line in enumerate(lines) if line.startswith(LICENCE))
    assert licence < next(i for i, line in enumerate(lines) if line.startswith("Fetching "))
    ready = next(line for line in run.stdout.splitlines() if line.startswith("Ready: "))
    assert "--model" in ready and ready.endswith("v-express")


@pytest.mark.parametrize("name,said", [("face", "insightface's pretrained models: non-commercial research use"),
                                       ("hallo2-upscaler", "S-Lab License 1.0 (non-commercial)"),
                                       ("separator", None), ("dwpose", None)])
def test_every_non_commercial_entry_says_its_licence_in_the_same_place(name, said):
    notice = DOWNLOADS[name].licence_notice
    assert (notice is None) if said is None else (notice.startswith(f"Licence of {name}: ") and said in notice)
    assert [n for n, d in DOWNLOADS.items() if d.licence_notice] == ["v-express", "face", "hallo2-upscaler"]


def test_a_cut_transfer_resumes_where_it_stopped(hub, repositories, tmp_path):
    key = (VEXPRESS, "denoising_unet.bin")
    whole = repositories[VEXPRESS]["denoising_unet.bin"]
    cut = len(whole) // 2
    hub.cut[key] = [cut, 100]  # every transfer of it breaks there
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=r"broke off at .* of denoising_unet\.bin .*What arrived is kept"):
        download(["v-express"], models)
    assert _partial(models, *key).stat().st_size == cut
    assert _placed(models) == {}  # nothing half-placed, not even the files that arrived whole
    hub.cut.clear()
    hub.requests.clear()
    result = download(["v-express"], models)
    assert f"bytes={cut}-" in [r for m, p, r in hub.requests if m == "GET" and p.startswith("/cdn/")]
    assert _placed(models)["v-express/denoising_unet.bin"] == whole and sorted(result.placed + result.present) == \
        sorted(EXPECTED)


def test_the_download_entry_in_comfyui_says_the_licence_and_lists_the_network(hub, repositories, tmp_path, caplog):
    """Load EMO Model offers 'download: v-express (~6.2 GB)'; its fetch logs the licence before the transfer (and
    sends it to the graph); afterwards the list offers v-express/denoising_unet.bin, standing for the five files, and
    not the other four, and the entry is gone."""
    import comfy_stubs

    comfy_stubs.install(tmp_path / "models", tmp_path / "output")
    pack = comfy_stubs.load_pack()
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    downloads = sys.modules[pack.__name__ + ".nodes.downloads"]
    entry = "download: v-express (~6.2 GB)"
    assert entry in loader.INPUT_TYPES()["required"]["checkpoint"][0]
    message = loader.VALIDATE_INPUTS("v-express/denoising_unet.bin")  # a saved workflow, before the download
    assert isinstance(message, str) and f"Pick '{entry}'" in message and "download v-express" in message
    with caplog.at_level(logging.INFO):
        path = downloads.fetch(downloads.requested(entry))
    assert path == tmp_path / "models" / "emo" / "v-express"
    lines = [r.getMessage() for r in caplog.records]
    licence = next(i for i, line in enumerate(lines) if line.startswith("EMO: " + LICENCE))
    assert caplog.records[licence].levelno == logging.WARNING
    assert licence < next(i for i, line in enumerate(lines) if line.startswith("EMO: fetching "))
    listed = loader.INPUT_TYPES()["required"]["checkpoint"][0]
    assert "v-express/denoising_unet.bin" in listed and entry not in listed
    assert not any(c.startswith("v-express/") and c != "v-express/denoising_unet.bin" for c in listed)
