"""`download metrics` from a hub on 127.0.0.1 (tests/local_hub.py) serving fake files under LatentSync-1.5's real
repository and paths (auxiliary/syncnet_v2.model, auxiliary/sfd_face.pth): state dicts under SyncNet's and S3FD's
own key names and shapes, each tensor a one-value storage expanded to its shape (torch.save keeps the storage, so the
files are a few kB). Exactly those two are placed in metrics/, where MetricModels finds them; a file that is not its
network, or a pickle that carries code, is refused and nothing is placed."""

from __future__ import annotations

import io

import pytest
import torch

from local_hub import serving
from test_download_faults import _placed, _record, _serve
from test_vexpress_download import WritesOnLoad
from emo_pipeline.download import DOWNLOADS, DownloadError, download, missing_files
from emo_pipeline.metrics.evaluate import MetricModels, find_metric_files
from emo_pipeline.metrics.s3fd import S3FDNet
from emo_pipeline.metrics.syncnet import SyncNet

REPO = "ByteDance/LatentSync-1.5"
EXPECTED = ["metrics/sfd_face.pth", "metrics/syncnet_v2.model"]


def fake_state(network: torch.nn.Module, drop: str = "", legacy: bool = False, **extra) -> bytes:
    """The network's keys and shapes, every tensor one stored value expanded (stride 0)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in network().state_dict().items() if not k.endswith(drop or "\0")}
    state = {k: torch.full((1,), 0.01).expand(s) if s else torch.tensor(0.01) for k, s in shapes.items()} | extra
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def repositories():
    # syncnet_v2.model as syncnet_python's old torch wrote it: the legacy format, no num_batches_tracked
    return {REPO: {"auxiliary/syncnet_v2.model": fake_state(SyncNet, ".num_batches_tracked", legacy=True),
                   "auxiliary/sfd_face.pth": fake_state(S3FDNet),
                   "latentsync_unet.pt": b"never read by our loaders"}}


@pytest.fixture
def hub(repositories, monkeypatch):
    with serving(repositories, monkeypatch) as server:
        yield server


def test_metrics_places_its_two_files_where_evaluate_reads_them(hub, repositories, tmp_path):
    assert len(repositories[REPO]["auxiliary/sfd_face.pth"]) < 100_000  # small fakes of the right shapes
    models = tmp_path / "emo"
    result = download(["metrics"], models)
    assert sorted(result.placed) == EXPECTED and result.models == []
    assert _placed(models) == {f.target: repositories[REPO][f.path] for f in DOWNLOADS["metrics"].files}
    assert "/ByteDance/LatentSync-1.5/resolve/main/latentsync_unet.pt" not in hub.content_gets()
    assert missing_files(models, [DOWNLOADS["metrics"]]) == []
    assert find_metric_files([models]) == (models / "metrics" / "syncnet_v2.model", models / "metrics" / "sfd_face.pth")
    loaded = MetricModels.load([models])
    assert isinstance(loaded.syncnet, SyncNet) and loaded.analyzer is None
    assert float(loaded.syncnet.netfcaud[0].bias[0].detach()) == pytest.approx(0.01)


def test_the_entry_says_its_sizes_and_licence():
    entry = DOWNLOADS["metrics"]
    assert {f.path for f in entry.files} == {"auxiliary/syncnet_v2.model", "auxiliary/sfd_face.pth"}
    assert {f.repo for f in entry.files} == {REPO} and entry.model is None
    assert 140e6 < entry.approx_bytes < 150e6
    assert "MIT" in entry.licence and "not confirmed" in entry.licence and entry.licence_notice is None


def _code(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save({"netcnnaud.0.weight": WritesOnLoad(marker)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("path,served,message", [
    ("auxiliary/syncnet_v2.model", "s3fd", r"metrics/syncnet_v2\.model \(syncnet\) is damaged: .*does not hold "
                                           r"SyncNet's weights \(missing 88"),
    ("auxiliary/sfd_face.pth", "syncnet", r"metrics/sfd_face\.pth \(s3fd\) is damaged: .*does not hold S3FD's weights"),
    ("auxiliary/sfd_face.pth", "short", r"sfd_face\.pth \(s3fd\) is damaged: .*does not hold S3FD's weights "
                                        r"\(missing 1: conf\.5\.bias"),
    ("auxiliary/syncnet_v2.model", "code", r"syncnet_v2\.model \(syncnet\) is damaged: Refused .*carries code"),
])
def test_a_wrong_file_is_refused_and_nothing_is_placed(path, served, message, hub, repositories, tmp_path):
    marker = tmp_path / "code-ran"
    wrong = {"s3fd": repositories[REPO]["auxiliary/sfd_face.pth"],
             "syncnet": repositories[REPO]["auxiliary/syncnet_v2.model"],
             "short": fake_state(S3FDNet, drop="conf.5.bias"), "code": None}[served]
    _serve(hub, REPO, path, wrong if wrong is not None else _code(marker))
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match=message) as refused:
        download(["metrics"], models)
    assert "Nothing was placed" in str(refused.value) and not marker.exists()
    assert _placed(models) == {} and _record(models) == {}
    _serve(hub, REPO, path, repositories[REPO][path])
    assert sorted(download(["metrics"], models).placed) == EXPECTED
