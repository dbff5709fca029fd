"""The download from inside a real ComfyUI (only when COMFYUI_PATH points to a checkout), against a hub on
127.0.0.1: Load EMO Model's 'download: hallo' entry queued in the basic workflow sends progress events, Cancel
(ComfyUI's /interrupt) leaves nothing placed, the next run resumes, renders and places the files, and a run after
that finds them without asking the hub.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest -q tests/test_comfyui_download.py

The hub serves tiny files under Hallo's names; a test-only custom node (tests/tiny_families.py) lets the server's
loader take their tiny shapes as Hallo's.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from comfy_stubs import ROOT
from local_hub import LocalHub
from test_comfyui_integration import free_port, request, upload

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run")
HALLO = "fudan-generative-ai/hallo"


class Messages:
    """ComfyUI's websocket (/ws): its JSON messages, read with the standard library (RFC 6455 client)."""

    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=900)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        header = b""
        while b"\r\n\r\n" not in header:
            header += self.sock.recv(1)
        assert b" 101 " in header.split(b"\r\n")[0], header

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("ComfyUI closed the websocket")
            data += chunk
        return data

    def next(self) -> dict | None:
        """The next message (None for binary frames, such as previews)."""
        first, second = self._exact(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._exact(2), "big")
        elif length == 127:
            length = int.from_bytes(self._exact(8), "big")
        payload = self._exact(length)
        return json.loads(payload) if first & 0x0F == 1 else None

    def until(self, condition, bound_s: float = 900) -> list[dict]:
        """Messages up to and including the first that meets `condition` (the bound only stops a broken run)."""
        seen, deadline = [], time.monotonic() + bound_s
        while time.monotonic() < deadline:
            message = self.next()
            if message is not None:
                seen.append(message)
                if condition(message):
                    return seen
        raise AssertionError(f"no such message in {bound_s} s: {seen[-5:]}")


def test_download_in_real_comfyui(tmp_path, repositories):
    import test_download

    hub = LocalHub()
    for path, data in repositories[HALLO].items():
        hub.add(HALLO, path, data)
    hub.start()
    models = tmp_path / "models" / "emo"
    models.mkdir(parents=True)
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "emo_portrait").symlink_to(ROOT, target_is_directory=True)
    patch = custom / "emo_tiny_families"  # test only: tiny shapes under Hallo's names load as Hallo
    patch.mkdir()
    (patch / "__init__.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                                       "import tiny_families\ntiny_families.patch_when_imported()\n"
                                       "NODE_CLASS_MAPPINGS = {}\n")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"emo_test:\n  base_path: {tmp_path}\n  custom_nodes: {custom}\n  emo: {models}\n")
    out, inp = tmp_path / "output", tmp_path / "input"
    out.mkdir(), inp.mkdir(), (tmp_path / "user").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DOWNLOAD_TIMEOUT="600", HF_HOME=str(tmp_path / "hf-home"))
    log = open(tmp_path / "comfyui.log", "w")
    server = subprocess.Popen(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1", "--port",
         str(port), "--extra-model-paths-config", str(config), "--output-directory", str(out), "--input-directory",
         str(inp), "--user-directory", str(tmp_path / "user"), "--database-url", "sqlite:///:memory:"],
        cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            try:
                info = request(f"{base}/object_info/LoadEMOModel")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "comfyui.log").read_text()[-3000:]
                time.sleep(0.2)
        choices = info["LoadEMOModel"]["input"]["required"]["checkpoint"][0]
        entry = next(c for c in choices if c.startswith("download: hallo "))

        from PIL import Image
        from skimage import data

        Image.fromarray(data.astronaut()).save(tmp_path / "p.png")
        wav = test_download._speech(tmp_path, 0.5)
        prompt = json.loads((ROOT / "example_workflows" / "api" / "emo_basic.api.json").read_text())
        prompt["1"]["inputs"]["image"], prompt["2"]["inputs"]["audio"] = upload(base, tmp_path / "p.png"), upload(base, wav)
        prompt["3"]["inputs"]["checkpoint"] = entry
        prompt["6"]["inputs"].update(steps=2, preset="custom")  # 2 steps: the widgets decide
        client = uuid.uuid4().hex
        messages = Messages(port, client)

        def queue() -> str:
            reply = request(f"{base}/prompt", json.dumps({"prompt": prompt, "client_id": client}).encode(),
                            {"Content-Type": "application/json"})
            return reply["prompt_id"]

        def ended(prompt_id: str):
            return lambda m: m["type"] in ("execution_success", "execution_interrupted", "execution_error") and \
                m["data"].get("prompt_id") == prompt_id

        # 1. Cancel midway: progress on Load EMO Model first, then nothing placed
        net = repositories[HALLO]["hallo/net.pth"]
        hub.hold, hub.hold_after = (HALLO, "hallo/net.pth"), test_download.BLOCK + 4096
        partial = models / ".emo-download" / "partial" / "fudan-generative-ai--hallo" / "hallo" / "net.pth"
        first = queue()
        seen = messages.until(lambda m: m["type"] == "progress" and m["data"].get("node") == "3")
        deadline = time.monotonic() + 900
        while not (partial.is_file() and partial.stat().st_size >= test_download.BLOCK):
            assert time.monotonic() < deadline, "the transfer never reached the held block"
            time.sleep(0.05)
        urllib.request.urlopen(urllib.request.Request(f"{base}/interrupt", b"{}", {"Content-Type": "application/json"}),
                               timeout=60).read()  # the Cancel button (an empty answer)
        hub.release.set()
        seen += messages.until(ended(first))
        assert seen[-1]["type"] == "execution_interrupted", seen[-1]
        assert not (models / "hallo").exists() and not (models / "vae").exists()  # Cancel leaves nothing placed

        # 2. The next run resumes, places the files and renders
        hub.requests.clear()
        second = queue()
        seen = messages.until(ended(second))
        assert seen[-1]["type"] == "execution_success", seen[-1]
        progress = [m["data"]["value"] for m in seen if m["type"] == "progress" and m["data"].get("node") == "3"]
        assert progress and progress == sorted(progress)
        assert any(r and r.startswith("bytes=") for m, p, r in hub.requests if m == "GET")
        assert (models / "hallo" / "net.pth").read_bytes() == net
        assert list(out.rglob("*.mp4"))

        # 3. A run after that (the loader re-runs: another precision) finds the files and asks the hub nothing
        hub.requests.clear()
        prompt["3"]["inputs"]["precision"] = "fp32"
        third = queue()
        assert messages.until(ended(third))[-1]["type"] == "execution_success"
        assert hub.requests == []
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
        hub.stop()


@pytest.fixture(scope="module")
def repositories(tmp_path_factory):
    import test_download

    return test_download._repositories(tmp_path_factory.mktemp("repos"))
