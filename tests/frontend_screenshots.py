"""Screenshots of the shipped workflows, and of old saved workflows as the frontend migrates them, in a real
ComfyUI frontend; a check that every node opens fully visible; a check of web/emo_presets.js's greying.

Not a pytest test (no test_ prefix): it needs a ComfyUI checkout, a browser and minutes. It downloads nothing.

What it does: starts ComfyUI (`main.py --cpu`) on a free port with a temporary user folder (settings: no
template browser on first start, no missing-models dialog, no fps counter; optionally Vue nodes), a temporary
input folder holding placeholder files under the names the workflows' Load Image / Load Audio nodes ask for, a
temporary models folder (--extra-model-paths-config) with empty files under the names the workflows' `models`
lists give (as after a download: no missing-model toast or red node; ComfyUI's own models/ is not touched),
and an in-memory database; opens it in headless Chromium at the given window size (the page's viewport, the
browser's own bars not counted); then for each shipped workflow (example_workflows/*.json) and each old saved
workflow (tests/data/old_workflows/*.json, migrated by web/emo_workflow_migration.js as it opens) calls
`app.loadGraphData(workflow)` (a file opened or dropped: the saved view `extra.ds` is restored) and

  * measures each node's screen rectangle, title bar included (the node's DOM element in Vue nodes mode,
    else `node.getBounding()` through `app.canvas.ds`), and asks the page, on a 16-pixel grid over it, what
    is on top there (`document.elementFromPoint`): the canvas or the node's own DOM is visible; the
    sidebar, the floating toolbars, the tab bar, the minimap, a toast or the window's edge is not;
  * prints every node that is not fully visible with what hides it, and every two nodes whose rectangles (as
    the frontend sized them) overlap; also how each shipped workflow opens from the template browser
    (`openSource: 'template'`: 1.58 fits the view there, 1.27 restores ds), for information;
  * checks the EMO nodes' preset greying: steps/cfg/scheduler disabled exactly as web/emo_presets.js
    decides for the saved preset, and again after switching emo_basic's sampler to each preset through the
    widget's callback (what a click does in both renderers); that `graph.serialize()` keeps every widget
    value as saved (disabled widgets are not dropped) and the prompt still carries steps and cfg;
  * writes docs/screenshots/frontend-<version>_<workflow>.png, frontend-<version>_migrated_<old workflow>.png,
    frontend-<version>_preset_<preset>.png (emo_basic's EMO Sampler switched to each preset, cropped) and
    frontend-<version>_migrated_<old workflow>_balanced.png (an old workflow whose migration added options
    nodes, its sampler switched to balanced: Sampler Options' guidance_end and cache_interval greyed too);
    with --vue-nodes the prefix is frontend-<version>_vue_. PNGs in 256 colours.

Exits 1 if any node is not fully visible or overlaps another on opening a file (a shipped workflow, or an old
one as migrated), or the greying or the saved values are wrong.

Needs: a ComfyUI checkout (tested: 0.3.64) whose Python has selenium (`pip install selenium`; pillow comes
with ComfyUI); Debian's `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver). This pack
in ComfyUI's custom_nodes (if it is not, a link custom_nodes/emo-portrait → this repository is made for the
run and removed after). Frontends: ComfyUI 0.3.64's pinned package (1.27.10, without --front-end-root) and
1.58.1 (`pip install --target /tmp/fe158 comfyui-frontend-package==1.58.1`):

    /tmp/comfy-venv/bin/python tests/frontend_screenshots.py --comfyui /tmp/comfy
    /tmp/comfy-venv/bin/python tests/frontend_screenshots.py --comfyui /tmp/comfy \\
        --front-end-root /tmp/fe158/comfyui_frontend_package/static
    /tmp/comfy-venv/bin/python tests/frontend_screenshots.py --comfyui /tmp/comfy \\
        --front-end-root /tmp/fe158/comfyui_frontend_package/static --vue-nodes

Options: --size WxH (default 1280x800), --no-write (measure only), --only NAME (a workflow's file stem, may
repeat), --workflows DIR (other shipped workflows, e.g. an earlier commit's, to measure them), --out DIR,
--python (ComfyUI's interpreter, default this one), --keep-log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
OLD_WORKFLOWS = sorted((ROOT / "tests" / "data" / "old_workflows").glob("*.json"))
SCREENSHOTS = ROOT / "docs" / "screenshots"
PRESET_SAMPLE = "emo_basic"  # whose EMO Sampler is switched through every preset

PANEL_JS = r"""
// What covers the canvas at (x, y): the outermost element there that is not the whole page (the sidebar,
// a toolbar, the tab bar, the minimap, a toast), named by its label or test id and first classes
// ... or another node (its Vue element, or a DOM widget of it such as a Note's text): "node <id> <type>"
window.__emoNodeElements = () => app.graph._nodes.map((n) => [n,
  [document.querySelector(`[data-node-id="${n.id}"]`), ...(n.widgets || []).map((w) => w.element)].filter(Boolean)]);
window.__emoPanel = (x, y, canvasEl, own, owners = []) => {
  if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) return 'outside the window';
  const hit = document.elementFromPoint(x, y);
  if (!hit) return 'outside the window';
  if (hit === canvasEl || own.some((o) => o.contains(hit))) return null;
  const owner = owners.find(([, els]) => els.some((e) => e.contains(hit)));
  if (owner) return `node ${owner[0].id} ${owner[0].type}`;
  const vueNode = hit.closest('[data-node-id]');
  if (vueNode) return `node ${vueNode.dataset.nodeId}`;
  let panel = hit;
  for (let e = hit; e && e !== document.body; e = e.parentElement) {
    const b = e.getBoundingClientRect();
    if (b.width * b.height > 0.4 * innerWidth * innerHeight || e.contains(canvasEl)) break;
    panel = e;
  }
  const b = panel.getBoundingClientRect();
  const label = panel.getAttribute('aria-label') || panel.getAttribute('data-testid') || '';
  const cls = (typeof panel.className === 'string' ? panel.className : '').trim().split(/\s+/).filter(Boolean);
  return `${panel.tagName.toLowerCase()}${label ? `[${label}]` : ''}${cls.length ? '.' + cls.slice(0, 2).join('.') : ''}`
    + ` at [${[b.left, b.top, b.width, b.height].map(Math.round)}]`;
};
"""

CHROME_JS = r"""
// everything that covers the canvas (nodes and their DOM widgets not counted), on a 10-pixel grid
const canvasEl = app.canvas.canvas, found = {};
const own = [...document.querySelectorAll('[data-node-id]'),
             ...app.graph._nodes.flatMap((n) => (n.widgets || []).map((w) => w.element))].filter(Boolean);
for (let x = 5; x < innerWidth; x += 10) for (let y = 5; y < innerHeight; y += 10) {
  const why = window.__emoPanel(x, y, canvasEl, own);
  if (why) found[why] = (found[why] || 0) + 1;
}
return found;
"""

MEASURE_JS = r"""
const c = app.canvas, canvasEl = c.canvas, cr = canvasEl.getBoundingClientRect();
const [ox, oy] = c.ds.offset, s = c.ds.scale;
const nodes = [], elements = window.__emoNodeElements();
for (const n of app.graph._nodes) {
  const el = document.querySelector(`[data-node-id="${n.id}"]`);
  let r;
  if (el && el.getBoundingClientRect().width > 0) {
    const b = el.getBoundingClientRect(); r = [b.left, b.top, b.width, b.height];
  } else {
    const b = n.getBounding(); r = [cr.left + (b[0] + ox) * s, cr.top + (b[1] + oy) * s, b[2] * s, b[3] * s];
  }
  const own = [el, ...(n.widgets || []).map((w) => w.element)].filter(Boolean);
  const hidden = {};
  let total = 0, bad = 0;
  const nx = Math.max(2, Math.ceil(r[2] / 16) + 1), ny = Math.max(2, Math.ceil(r[3] / 16) + 1);
  for (let i = 0; i < nx; i++) for (let j = 0; j < ny; j++) {
    const x = r[0] + 1 + (r[2] - 2) * i / (nx - 1), y = r[1] + 1 + (r[3] - 2) * j / (ny - 1);
    total++;
    const why = window.__emoPanel(x, y, canvasEl, own, elements.filter(([m]) => m !== n));
    if (why) { bad++; hidden[why] = (hidden[why] || 0) + 1; }
  }
  nodes.push({ id: n.id, type: n.type, title: n.title, rect: r.map(Math.round), total, bad, hidden });
}
return { ds: [[ox, oy], s], canvas: [cr.left, cr.top, cr.width, cr.height].map(Math.round),
         viewport: [innerWidth, innerHeight], nodes };
"""

PRESETS_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const listed = await (await fetch('extensions')).json();  // the extensions' URLs, as the frontend loads them
  const url = listed.find((u) => /\/emo_presets\.js$/.test(u));
  if (!url) return done({ error: 'web/emo_presets.js was not loaded by the frontend' });
  const m = await import(url);
  const table = await m.loadTable();
  const t = table ?? m.FALLBACK;
  const optionTypes = new Set(Object.values(t.options).flatMap((o) => Object.keys(o)));
  const names = new Set([...m.CONTROLLED, ...Object.values(t.decides).flat(),
                         ...Object.values(t.options).flatMap((o) => Object.values(o).flat())]);
  const state = (n) => Object.fromEntries(n.widgets.filter((w) => names.has(w.name)).map((w) => [w.name, !!w.disabled]));
  const nodes = [];
  for (const n of app.graph._nodes) {
    if (!n.widgets) continue;
    const preset = n.widgets.find((w) => w.name === t.presetWidget);
    if (preset && t.nodes.includes(n.type)) {
      nodes.push({ id: n.id, type: n.type, preset: preset.value, disabled: state(n), expected: m.widgetStates(table, n.widgets) });
    } else if (optionTypes.has(n.type)) {
      const reached = m.reachedPresets(table, n);
      nodes.push({ id: n.id, type: n.type, preset: `reaching ${JSON.stringify(reached)}`, disabled: state(n),
                   expected: m.optionStates(table, n.type, reached) });
    }
  }
  done({ table, nodes });
})().catch((e) => done({ error: String(e && e.stack || e) }));
"""

SWITCH_JS = r"""
const [id, value] = arguments;
const n = app.graph.getNodeById(id);
const w = n.widgets.find((w) => w.name === 'preset');
w.value = value;
w.callback?.(value, app.canvas, n);  // what the canvas and the Vue widget do on a choice
app.canvas.setDirty(true, true);
return Object.fromEntries(n.widgets.map((w) => [w.name, !!w.disabled]));
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def placeholder_inputs(folder: Path, workflows: list[Path]) -> None:
    """The files the workflows' Load Image / Load Audio widgets name, so that no node is flagged missing."""
    from PIL import Image

    for path in workflows:
        for node in json.loads(path.read_text()).get("nodes", []):
            values = node.get("widgets_values")
            if node.get("type") not in ("LoadImage", "LoadAudio") or not values or not isinstance(values[0], str):
                continue
            target = folder / values[0]
            if target.exists() or "/" in values[0]:
                continue
            if node["type"] == "LoadImage":
                Image.new("RGB", (512, 512), (150, 120, 100)).save(target)
            else:
                with wave.open(str(target), "wb") as w:
                    w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
                    w.writeframes(b"\0\0" * 16000)


def placeholder_models(folder: Path, workflows: list[Path]) -> Path:
    """Empty files under the names the workflows' `models` lists give (as after a download), in a folder that
    an extra_model_paths file adds: no missing-model dialog, toast or red node (ComfyUI's models/ untouched)."""
    kinds = set()
    for path in workflows:
        workflow = json.loads(path.read_text())
        listed = workflow.get("models", []) + [m for n in workflow.get("nodes", [])
                                               for m in n.get("properties", {}).get("models", [])]
        for model in listed:
            name, kind = model.get("name"), model.get("directory")
            if not name or not kind or ".." in Path(name).parts or Path(name).is_absolute():
                continue
            kinds.add(kind)
            target = folder / kind / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    config = folder / "extra_model_paths.yaml"
    config.write_text("emo_frontend_screenshots:\n" + f"    base_path: {folder}\n"
                      + "".join(f"    {kind}: {kind}\n" for kind in sorted(kinds)))
    return config


@contextlib.contextmanager
def pack_installed(comfyui: Path):
    nodes = comfyui / "custom_nodes"
    if any(p.resolve() == ROOT for p in nodes.iterdir()):
        yield
        return
    link = nodes / "emo-portrait"
    if link.exists() or link.is_symlink():
        sys.exit(f"{link} exists and is not this repository: install the pack yourself or move it away.")
    link.symlink_to(ROOT)
    try:
        yield
    finally:
        link.unlink()


@contextlib.contextmanager
def comfyui_server(args, work: Path):
    user = work / "user"
    (user / "default").mkdir(parents=True)
    # a fresh default graph on every page load (no tabs restored from the last one); no fps counter in the
    # corner (screenshots of a rerun come out the same)
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                "Comfy.Workflow.Persist": False, "Comfy.Graph.CanvasInfo": False,
                "Comfy.VueNodes.Enabled": bool(args.vue_nodes)}
    (user / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    inputs = work / "input"
    inputs.mkdir()
    placeholder_inputs(inputs, WORKFLOWS + OLD_WORKFLOWS)
    models = placeholder_models(work / "models", WORKFLOWS + OLD_WORKFLOWS)
    port = free_port()
    command = [args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--user-directory", str(user), "--input-directory", str(inputs),
               "--extra-model-paths-config", str(models),
               "--database-url", "sqlite:///:memory:"]
    if args.front_end_root:
        command += ["--front-end-root", str(args.front_end_root)]
    log = open(work / "comfyui.log", "w")
    server = subprocess.Popen(command, cwd=args.comfyui, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                sys.exit(f"ComfyUI stopped (exit {server.returncode}); its log: {work / 'comfyui.log'}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/system_stats", timeout=2).read()
                break
            time.sleep(0.5)
        else:
            sys.exit("ComfyUI did not answer within 5 minutes")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def browser(args):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = args.chromium
    width, height = args.size
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={width},{height + 200}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    # the page's viewport is the size asked for (the browser's own bars not counted)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.set_script_timeout(120)
    return driver


def settle(driver, seconds=1.5):
    """Waits for the frontend to draw the graph it was given (two animation frames, then DOM widgets)."""
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, arguments[0])));",
        int(seconds * 1000))


def fresh_page(driver, url) -> str:
    """The page loaded anew (one tab, the default graph): each workflow opens as into a fresh session."""
    driver.get(url)
    for _ in range(240):
        if driver.execute_script("return !!(window.app && app.graph && app.canvas)"):
            break
        time.sleep(0.5)
    else:
        sys.exit("the frontend did not start within 2 minutes")
    settle(driver, 3)
    driver.execute_script(PANEL_JS)
    return driver.execute_script("return window.__COMFYUI_FRONTEND_VERSION__")


def open_workflow(driver, workflow: dict, name: str, template=False):
    """As a file named `name`.json is opened (or a template, which 1.58 opens with openSource 'template')."""
    error = driver.execute_async_script(
        "const [wf, name, template, done] = arguments;"
        "app.loadGraphData(wf, true, true, name, template ? { openSource: 'template' } : {})"
        ".then(() => done(null), (e) => done(String(e)));", workflow, name, template)
    if error:
        sys.exit(f"loading {name}: {error}")
    settle(driver)


def overlaps(label: str, measured: dict) -> list[str]:
    """Nodes drawn over each other as the frontend sized them (it widens a node to fit its title, and Vue nodes
    grow to fit their widgets): on the canvas one hides the other's widgets without any DOM on top."""
    lines = []
    nodes = measured["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["rect"], b["rect"]
            w, h = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
            if w > 1 and h > 1:
                lines.append(f"  {label}: node {a['id']} {a['type']} at {a['rect']} and node {b['id']} {b['type']} "
                             f"at {b['rect']} overlap by {w}x{h} px")
    return lines


def report(label: str, measured: dict) -> list[str]:
    lines = overlaps(label, measured)
    for node in measured["nodes"]:
        if node["bad"]:
            causes = ", ".join(f"{why} ({count})" for why, count in sorted(node["hidden"].items(), key=lambda x: -x[1]))
            lines.append(f"  {label}: node {node['id']} {node['type']} '{node['title']}' at {node['rect']} "
                         f"(x, y, w, h): {node['bad']}/{node['total']} points hidden by {causes}")
    return lines


def save_png(image, out: Path):
    """A UI screenshot in 256 colours (under half the bytes; no difference to see)."""
    from PIL import Image

    image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def screenshot(driver, out: Path):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as image:
        save_png(image, out)


def crop(shot: Path, rect, out: Path, margin=24):
    from PIL import Image

    with Image.open(shot) as image:
        x, y, w, h = rect
        box = (max(0, x - margin), max(0, y - margin), min(image.width, x + w + margin),
               min(image.height, y + h + margin))
        save_png(image.crop(box), out)


def check_presets(driver, label: str) -> list[str]:
    result = driver.execute_async_script(PRESETS_JS)
    if "error" in result:
        return [f"  {label}: {result['error']}"]
    problems = []
    for node in result["nodes"]:
        if node["disabled"] != node["expected"]:
            problems.append(f"  {label}: {node['type']} {node['id']} preset '{node['preset']}': disabled "
                            f"{node['disabled']}, expected {node['expected']}")
    return problems


def check_saved_values(driver, workflow: dict, label: str) -> list[str]:
    """The nodes with greyed widgets save every widget value as opened, and the prompt carries them."""
    saved = driver.execute_script("return app.graph.serialize()")
    # greyed node id → how many values its widgets hold (a file of today's nodes saves exactly that many)
    greyed = driver.execute_script(
        "return Object.fromEntries(app.graph._nodes.filter((n) => n.widgets?.some((w) => w.disabled))"
        ".map((n) => [String(n.id), n.widgets.filter((w) => w.serialize !== false).length]))")
    before = {str(n["id"]): n.get("widgets_values") or [] for n in workflow["nodes"]}
    # (an old node that the migration rewrote holds another number of values: the migration's tests check it)
    problems = [f"  {label}: node {n['id']} {n['type']} saves {n.get('widgets_values')}, "
                f"opened with {before[str(n['id'])]}"
                for n in saved["nodes"] if str(n["id"]) in greyed and len(before[str(n["id"])]) == greyed[str(n["id"])]
                and n.get("widgets_values") != before[str(n["id"])]]
    prompt = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "app.graphToPrompt().then((p) => done(p.output), (e) => done({error: String(e)}));")
    for node_id, node in prompt.items():
        if node_id != "error" and "preset" in node.get("inputs", {}):
            if not {"steps", "cfg", "scheduler"} <= set(node["inputs"]):
                problems.append(f"  {label}: the prompt's {node['class_type']} {node_id} lacks steps/cfg/scheduler: "
                                f"{sorted(node['inputs'])}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="the ComfyUI checkout")
    parser.add_argument("--python", default=sys.executable, help="ComfyUI's Python (default: this one)")
    parser.add_argument("--front-end-root", type=Path, help="a frontend's static folder (default: ComfyUI's own)")
    parser.add_argument("--vue-nodes", action="store_true", help="the 'Modern Node Design (Nodes 2.0)' setting on")
    parser.add_argument("--size", default="1280x800", help="the page's viewport, WxH")
    parser.add_argument("--no-write", action="store_true", help="measure and check only, no screenshots")
    parser.add_argument("--out", type=Path, default=SCREENSHOTS,
                        help="where the screenshots go (default docs/screenshots)")
    parser.add_argument("--only", action="append", help="a workflow's file stem (repeatable)")
    parser.add_argument("--workflows", type=Path, default=ROOT / "example_workflows",
                        help="the shipped workflows' folder (default example_workflows; e.g. an earlier version's)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--keep-log", action="store_true", help="keep the temporary folder with ComfyUI's log")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    args.comfyui = args.comfyui.resolve()

    work = Path(tempfile.mkdtemp(prefix="emo-frontend-"))
    problems: list[str] = []
    try:
        with pack_installed(args.comfyui), comfyui_server(args, work) as url:
            driver = browser(args)
            try:
                version = fresh_page(driver, url)
                prefix = f"frontend-{version}_" + ("vue_" if args.vue_nodes else "")
                print(f"frontend {version}{' (Vue nodes)' if args.vue_nodes else ''}, viewport "
                      f"{driver.execute_script('return [innerWidth, innerHeight]')}; over the canvas "
                      "(points of a 10-pixel grid):")
                for panel, count in sorted(driver.execute_script(CHROME_JS).items(), key=lambda x: -x[1]):
                    print(f"    {panel}: {count}")
                shipped = sorted(args.workflows.glob("*.json"))
                cases = [(p, p.stem, False) for p in shipped] + [(p, f"migrated_{p.stem}", True) for p in OLD_WORKFLOWS]
                for path, name, old in cases:
                    if args.only and path.stem not in args.only:
                        continue
                    workflow = json.loads(path.read_text())
                    if not old:  # as the template browser opens it (1.58 fits the view there)
                        open_workflow(driver, workflow, path.stem, template=True)
                        measured = driver.execute_script(MEASURE_JS)
                        hidden = report(f"{name} (template)", measured)
                        print(f"{name} opened as a template: ds {fmt_ds(measured['ds'])}, "
                              f"{'all nodes fully visible' if not hidden else f'{len(hidden)} not fully visible or overlapping'}")
                        for line in hidden:
                            print(line)
                        fresh_page(driver, url)
                    open_workflow(driver, workflow, path.stem)
                    measured = driver.execute_script(MEASURE_JS)
                    lines = report(name, measured)
                    print(f"{name}: ds {fmt_ds(measured['ds'])} (saved {fmt_ds(saved_ds(workflow))}), "
                          f"{len(measured['nodes'])} nodes, "
                          f"{'all fully visible' if not lines else f'{len(lines)} not fully visible or overlapping'}")
                    print("\n".join(f"    {n['id']:>3} {n['type']:<24} {n['rect']}" for n in measured["nodes"]))
                    for line in lines:
                        print(line)
                    problems += lines
                    problems += check_presets(driver, name)
                    if not old:
                        problems += check_saved_values(driver, workflow, name)
                    if not args.no_write:
                        args.out.mkdir(parents=True, exist_ok=True)
                        screenshot(driver, args.out / f"{prefix}{name}.png")
                    has_options = any(n["type"].endswith("Options") for n in measured["nodes"])
                    if name == PRESET_SAMPLE or (old and has_options):
                        problems += preset_round(driver, measured, name, prefix, args, work)
                    fresh_page(driver, url)
                if problems:
                    print("\nProblems:")
                for line in problems:
                    print(line)
            finally:
                driver.quit()
    finally:
        if args.keep_log:
            print(f"ComfyUI's log: {work / 'comfyui.log'}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("OK: every node fully visible, presets greyed as decided" if not problems else
          f"FAILED: {len(problems)} problem(s) above")
    return 1 if problems else 0


def preset_round(driver, measured, name, prefix, args, work) -> list[str]:
    """The sampler switched through every preset of its list: the greying follows, on the sampler and on the
    options nodes connected to it. For the shipped emo_basic and for each migrated old workflow to which the
    migration added options nodes. Screenshots: emo_basic's sampler cropped, per preset; a migrated one whole,
    with 'balanced'."""
    problems = []
    sampler = next(n for n in measured["nodes"] if n["type"] in ("EMOSampler", "EMOSampleToVideo"))
    choices = driver.execute_script(
        "const w = app.graph.getNodeById(arguments[0]).widgets.find((w) => w.name === 'preset');"
        "return w.options.values;", sampler["id"])
    for preset in choices:
        driver.execute_script(SWITCH_JS, sampler["id"], preset)
        settle(driver, 0.5)
        problems += check_presets(driver, f"{name} switched to {preset}")
        if args.no_write:
            continue
        if name == PRESET_SAMPLE:
            shot = work / "preset.png"
            driver.save_screenshot(str(shot))
            rect = driver.execute_script(MEASURE_JS)["nodes"]
            crop(shot, next(n["rect"] for n in rect if n["id"] == sampler["id"]),
                 args.out / f"{prefix}preset_{preset.replace(' ', '_')}.png")
        elif preset == "balanced":
            screenshot(driver, args.out / f"{prefix}{name}_balanced.png")
    return problems


def saved_ds(workflow):
    ds = workflow.get("extra", {}).get("ds")
    return [ds["offset"], ds["scale"]] if ds else None


def fmt_ds(ds):
    if not ds:
        return "none"
    (x, y), s = ds
    return f"offset ({x:.0f}, {y:.0f}) scale {s:.3g}"


if __name__ == "__main__":
    sys.exit(main())
