"""web/emo_ran.js, run by node.js against a stand-in for the frontend's app: after EMO Sampler (or EMO Sample
To Video) runs, the ui text nodes/sampler.py sends is drawn under the node and shown as a toast; nothing is
added to what the workflow saves (no widget, no property); other nodes are left alone."""

import json
import shutil
import subprocess

import pytest

import comfy_stubs

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node.js runs the frontend's extension")

APP = """
export const toasts = [];
export const extensions = [];
export const app = { registerExtension: (e) => extensions.push(e), extensionManager: { toast: { add: (t) => toasts.push(t) } } };
"""
RUN = """
import { app, extensions, toasts } from './scripts/app.js';
await import('./pack/web/emo_ran.js');
const drawn = [];
const ctx = { save() {}, restore() {}, fillText: (text, x, y) => drawn.push([text, x, y]) };
const out = {};
for (const name of ['EMOSampler', 'EMOSampleToVideo', 'EMOVideoCombine']) {
    function Node() { this.title = name === 'EMOSampler' ? 'EMO Sampler' : name; this.size = [340, 250]; this.flags = {};
                      this.widgets = []; this.properties = {}; }
    for (const e of extensions) await e.beforeRegisterNodeDef?.(Node, { name }, app);
    const node = new Node();
    node.onExecuted?.({ text: ['Ran 10 steps, cfg 2, scheduler ddim (preset model default decided steps, cfg)'] });
    node.onDrawForeground?.(ctx);
    out[name] = { widgets: node.widgets.length, properties: Object.keys(node.properties).length };
}
out.drawn = drawn; out.toasts = toasts.map((t) => t.detail);
process.stdout.write(JSON.stringify(out));
"""


def test_what_ran_is_drawn_under_the_sampler_and_toasted(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP)
    (tmp_path / "pack" / "web").mkdir(parents=True)
    shutil.copy(comfy_stubs.ROOT / "web" / "emo_ran.js", tmp_path / "pack" / "web" / "emo_ran.js")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "run.js").write_text(RUN)
    done = subprocess.run(["node", "run.js"], cwd=tmp_path, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    ran = "Ran 10 steps, cfg 2, scheduler ddim (preset model default decided steps, cfg)"
    assert out["drawn"] == [[ran, 0, 266], [ran, 0, 266]]  # under each sampler (250 high), none for the others
    assert out["toasts"] == [f"EMO Sampler: {ran}", f"EMOSampleToVideo: {ran}"]
    assert all(out[n] == {"widgets": 0, "properties": 0} for n in ("EMOSampler", "EMOSampleToVideo"))
