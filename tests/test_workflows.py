"""Shipped workflows agree with the nodes: widget values, link types, the API-format twins, a layout
without overlaps; and workflows saved by earlier versions (tests/data/old_workflows: the shipped ones
as they were before EMO Sampler was split) land on today's widgets, through the Python migration
(API prompts) and the frontend's (web/emo_migrate.js, run with node.js), which read one table."""

import copy
import inspect
import json
import shutil
import subprocess

import pytest

import comfy_stubs

TEMPLATES = comfy_stubs.ROOT / "example_workflows"  # the folder ComfyUI's template browser looks in first
WORKFLOWS = sorted(TEMPLATES.glob("*.json"))
OLD = comfy_stubs.ROOT / "tests" / "data" / "old_workflows"
OLD_WORKFLOWS = sorted(OLD.glob("*.json"))
TITLE_BAR = 30  # the frontend draws a node's title above its pos
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# Core nodes used by the workflows: their widget names, as ComfyUI 0.3.64 defines them.
CORE_WIDGETS = {"LoadImage": ["image", None], "LoadAudio": ["audio", None, None], "Note": [None], "PreviewImage": []}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    comfy_stubs.install(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("out"))
    return comfy_stubs.load_pack()


def widgets(cls) -> list[tuple[str | None, object]]:
    """(name, spec) per widget value, in the order the frontend stores them."""
    out = []
    spec = cls.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (kind, *opts) in spec.get(group, {}).items():
            options = opts[0] if opts else {}
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                out.append((name, (kind, options)))
                if options.get("control_after_generate"):
                    out.append((None, (["fixed", "increment", "decrement", "randomize"], {})))
    return out


def test_workflows_exist():
    names = [p.name for p in WORKFLOWS]
    assert {"emo_basic.json", "emo_long_audio.json", "emo_singing.json"} <= set(names)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_widget_values_match_node_inputs(pack, path):
    check_widget_values(pack, json.loads(path.read_text()))


def check_widget_values(pack, workflow):
    for node in workflow["nodes"]:
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            assert node["type"] in CORE_WIDGETS, node["type"]
            continue
        expected = widgets(cls)
        values = node["widgets_values"]
        assert len(values) == len(expected), node["type"]
        for (name, (kind, options)), value in zip(expected, values):
            if name == "checkpoint":
                assert isinstance(value, str) and value.endswith((".pth", ".safetensors", ".bin"))  # .bin: V-Express
            elif isinstance(kind, list) and value not in kind:
                # a file that is not there yet (combos list only what exists): the node's VALIDATE_INPUTS
                # takes the saved name, or says how to download it
                validate = getattr(cls, "VALIDATE_INPUTS", None)
                assert validate is not None and name in inspect.signature(validate).parameters, (node["type"], name, value)
                verdict = validate(**{name: value})
                assert verdict is True or "download" in str(verdict), (node["type"], name, value, verdict)
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and options.get("min", value) <= value <= options.get("max", value)
            elif kind == "STRING":
                assert isinstance(value, str)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_links_connect_matching_types(pack, path):
    check_links(pack, json.loads(path.read_text()))


def check_links(pack, workflow):
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(workflow["links"]) == len({link[0] for link in workflow["links"]})
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert out["type"] == inp["type"] == kind and link_id in out["links"] and inp["link"] == link_id
        cls = pack.NODE_CLASS_MAPPINGS.get(nodes[src]["type"])
        if cls is not None:
            assert cls.RETURN_TYPES[src_slot] == kind
        cls = pack.NODE_CLASS_MAPPINGS.get(nodes[dst]["type"])
        if cls is not None:  # the slot is an input of that name and type
            spec = cls.INPUT_TYPES()
            declared = {**spec.get("required", {}), **spec.get("optional", {})}
            assert inp["name"] in declared, (nodes[dst]["type"], inp["name"])
            assert declared[inp["name"]][0] == kind or inp.get("widget"), (nodes[dst]["type"], inp["name"])
    for node in nodes.values():  # every link a node names is in the list, and the other way round
        for slot, inp in enumerate(node.get("inputs", [])):
            if inp.get("link") is not None:
                assert [l for l in workflow["links"] if l[0] == inp["link"]][0][3:5] == [node["id"], slot]


def to_api(pack, workflow) -> dict:
    """Independent UI → API conversion, driven by the nodes' INPUT_TYPES (as the frontend does)."""
    links = {l[0]: l for l in workflow["links"]}
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def source(link_id):
        """Where a link's value comes from: through a bypassed node (mode 4), its input of the same type; a bypassed
        node with no such input passes nothing, and the input is left out (as the frontend's prompt leaves it)."""
        link = links[link_id]
        node = nodes[link[1]]
        if node.get("mode") == 4:
            through = next((i for i in node["inputs"] if i["type"] == link[5] and i.get("link") is not None), None)
            return None if through is None else source(through["link"])
        return [str(link[1]), link[2]]

    api = {}
    for node in workflow["nodes"]:
        if node["type"] == "Note" or node.get("mode") == 4:
            continue
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        names = [n for n, _ in widgets(cls)] if cls else CORE_WIDGETS[node["type"]]
        inputs = {n: v for n, v in zip(names, node["widgets_values"]) if n}
        for inp in node["inputs"]:
            if inp.get("link") is not None and source(inp["link"]) is not None:
                inputs[inp["name"]] = source(inp["link"])
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_api_twin_matches_ui_workflow(pack, path):
    twin = TEMPLATES / "api" / f"{path.stem}.api.json"
    shipped = json.loads(twin.read_text())
    for node in shipped.values():
        node.pop("_meta", None)
    assert shipped == to_api(pack, json.loads(path.read_text()))
    for node_id, node in shipped.items():  # every required input is given
        cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls:
            assert set(cls.INPUT_TYPES()["required"]) <= set(node["inputs"]), node_id


# What the frontend (1.58.1) takes for a model file when it scans widget values for missing models.
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_model_file_a_widget_names_carries_the_metadata_the_frontend_reads(pack, path):
    """Every widget value naming a model file is either shipped with the pack or listed in the workflow's
    `models` and its node's properties.models (the frontend's Missing Models panel shows these, with the URL,
    instead of "Unknown"): its name, the hub URL of the catalogue's file for it, and the ComfyUI model folder
    the node looks it up in."""
    import importlib

    from emo_pipeline.download.catalogue import DOWNLOADS

    loader = importlib.import_module(pack.__name__ + ".nodes.model_loader")
    separator = importlib.import_module(pack.__name__ + ".nodes.separate_vocals")
    assert separator.FOLDER == loader.FOLDER  # Kim_Vocal_2.onnx is looked up in the same registered folder
    workflow = json.loads(path.read_text())
    targets = {f.target: f for d in DOWNLOADS.values() for f in d.files}
    listed = []
    for node in workflow["nodes"]:
        files = [v for v in node.get("widgets_values") or [] if isinstance(v, str) and v.endswith(MODEL_SUFFIXES)]
        entries = []
        for name in dict.fromkeys(files):
            if name not in targets:  # the demo model: in the pack's own models/ folder, no download
                assert (comfy_stubs.ROOT / "models" / name).is_file(), (node["type"], name)
                continue
            f = targets[name]
            entries.append({"name": name, "url": f"https://huggingface.co/{f.repo}/resolve/main/{f.path}",
                            "directory": loader.FOLDER})
        assert node.get("properties", {}).get("models", []) == entries, node["type"]
        listed += [e for e in entries if e not in listed]
    assert workflow["models"] == listed
    singing = any(n["type"] == "EMOSeparateVocals" and n.get("mode", 0) == 0 for n in workflow["nodes"])
    assert singing <= any(e["name"] == "audio_separator/Kim_Vocal_2.onnx" for e in workflow["models"])
    uses_hallo = any(n["type"] == "LoadEMOModel" and n["widgets_values"][0] == "hallo/net.pth" for n in workflow["nodes"])
    assert uses_hallo == any(e["name"] == "hallo/net.pth" for e in workflow["models"])


def note_beside_loader(workflow) -> dict:
    """The Note to the right of Load EMO Model, level with it."""
    loader = next(n for n in workflow["nodes"] if n["type"] == "LoadEMOModel")
    x0, y0, x1, y1 = rectangles(workflow)[loader["id"]]
    beside = [n for n in workflow["nodes"] if n["type"] == "Note" and 0 <= n["pos"][0] - x1 <= 80
              and min(y1, n["pos"][1] + n["size"][1]) > max(y0, n["pos"][1] - TITLE_BAR)]
    assert len(beside) == 1, [n["id"] for n in beside]
    return beside[0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_a_note_beside_load_emo_model_says_how_to_get_the_weights(pack, path):
    """In view when the workflow opens (extra.ds on a 1280×720 canvas), beside Load EMO Model: the node's own
    download entry (the label its checkpoint list shows) and the command line, each for this workflow's model;
    that the frontend's own Download button fetches one file into the browser's folder; the demo needs none."""
    import importlib

    downloads = importlib.import_module(pack.__name__ + ".nodes.downloads")
    workflow = json.loads(path.read_text())
    note = note_beside_loader(workflow)
    text = note["widgets_values"][0]
    checkpoint = next(n for n in workflow["nodes"] if n["type"] == "LoadEMOModel")["widgets_values"][0]
    known = downloads.catalogue_file(checkpoint)
    family = known[0].name if known else "hallo"  # the demo points to Hallo for photographs
    assert f"Load EMO Model's checkpoint to '{downloads.entry(family)}' and press Run" in text
    assert f"python -m emo_pipeline download {family}" in text and "with the Python that runs ComfyUI" in text
    assert "only the one file it lists into your browser's download folder" in text and "models/emo" in text
    assert ("No download needed" in text) == (known is None)
    if any(n["type"] == "EMOSeparateVocals" for n in workflow["nodes"]):
        assert f"'{downloads.entry('separator')}'" in text and "download separator" in text
    ds = workflow["extra"]["ds"]  # screen = (canvas + offset) × scale
    x0, y0, x1, y1 = rectangles(workflow)[note["id"]]
    view = (-ds["offset"][0], -ds["offset"][1], -ds["offset"][0] + 1280 / ds["scale"], -ds["offset"][1] + 720 / ds["scale"])
    assert view[0] <= x0 and view[1] <= y0 and x1 <= view[2] and y1 <= view[3], (view, (x0, y0, x1, y1))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_saved_steps_and_cfg_are_what_runs(pack, path):
    """A sampler whose preset is 'model default' runs its model's own steps and cfg: the canvas shows those."""
    from emo_pipeline.config import preset as config_preset
    from emo_pipeline.io.loading import network_config
    import importlib

    downloads = importlib.import_module(pack.__name__ + ".nodes.downloads")
    workflow = json.loads(path.read_text())
    checkpoint = next(n for n in workflow["nodes"] if n["type"] == "LoadEMOModel")["widgets_values"][0]
    known = downloads.catalogue_file(checkpoint)
    config = config_preset(known[0].name) if known else network_config(comfy_stubs.ROOT / "models" / checkpoint)
    samplers = [named(pack, n) for n in workflow["nodes"] if n["type"] in ("EMOSampler", "EMOSampleToVideo")]
    assert samplers and all(s["preset"] == "model default" for s in samplers)
    for sampler in samplers:
        assert (sampler["steps"], sampler["cfg"]) == (config.steps, config.guidance_scale)


# ---- templates folder, layout, demo seeds -----------------------------------------------------------------------

def test_templates_live_in_one_folder_that_comfyui_reads_first():
    """ComfyUI (app/custom_node_manager.py) serves a pack's templates from example_workflows, example, examples,
    workflow or workflows, and prefers the first; the pack keeps them in that one only."""
    others = [name for name in ("example", "examples", "workflow", "workflows") if (comfy_stubs.ROOT / name).exists()]
    assert TEMPLATES.is_dir() and len(WORKFLOWS) >= 6 and others == []


def rectangles(workflow) -> dict:
    """Each node's area on the canvas as (x0, y0, x1, y1), its title bar included."""
    return {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_BAR, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in workflow["nodes"]}


def overlaps(workflow) -> list[tuple[int, int]]:
    boxes = sorted(rectangles(workflow).items())
    return [(a, b) for i, (a, ra) in enumerate(boxes) for b, rb in boxes[i + 1:]
            if min(ra[2], rb[2]) > max(ra[0], rb[0]) and min(ra[3], rb[3]) > max(ra[1], rb[1])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_nodes_do_not_overlap_and_fit_their_widgets(pack, path):
    workflow = json.loads(path.read_text())
    assert overlaps(workflow) == []
    for node in workflow["nodes"]:  # the frontend's rows: 20 px per slot, 24 per widget
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is not None:
            slots = max(len([i for i in node["inputs"] if not i.get("widget")]), len(cls.RETURN_TYPES))
            assert node["size"][1] >= 20 * slots + 24 * len(widgets(cls)), node["type"]


def test_overlap_check_finds_a_planted_overlap():
    workflow = json.loads((TEMPLATES / "emo_demo.json").read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert overlaps(workflow) == []
    below = copy.deepcopy(workflow)  # Load EMO Model reaching down over EMO Demo Inputs' title bar only
    top, under = {n["id"]: n for n in below["nodes"]}[3], nodes[1]
    top["size"] = [under["size"][0], under["pos"][1] - top["pos"][1] - TITLE_BAR + 5]  # no wider than it
    assert overlaps(below) == [(1, 3)]
    top["size"][1] -= 10
    assert overlaps(below) == []
    onto = copy.deepcopy(workflow)  # a node dropped onto another
    {n["id"]: n for n in onto["nodes"]}[7]["pos"] = [nodes[6]["pos"][0] + 50, nodes[6]["pos"][1] + 50]
    assert overlaps(onto) == [(6, 7)]


def test_demo_keeps_its_seeds():
    """The frontend randomises a seed after each run unless its control says fixed: the demo's two seeds do
    not change (EMO Demo Inputs declares the control, so its saved value is read back in every frontend)."""
    workflow = json.loads((TEMPLATES / "emo_demo.json").read_text())
    values = {n["type"]: n["widgets_values"] for n in workflow["nodes"]}
    assert values["EMODemoInputs"][1:] == [123456, "fixed"] and values["EMOSampler"][:2] == [0, "fixed"]


# ---- earlier versions' workflows ---------------------------------------------------------------------------------

# Today's widget order before the sampler was split (the frontend's order, with the seed's control).
OLD_ORDER = {
    "EMOSampler": ["seed", "control_after_generate", "steps", "cfg", "frames_per_clip", "motion_frames", "scheduler",
                   "decode_chunk", "pose_weight", "face_weight", "lip_weight", "head_speed", "preset", "guidance_end",
                   "cache_interval", "context_overlap", "emotion"],
    "EMOSampleToVideo": ["seed", "control_after_generate", "steps", "cfg", "frames_per_clip", "motion_frames",
                         "scheduler", "filename_prefix", "crf", "decode_chunk", "pose_weight", "face_weight",
                         "lip_weight", "head_speed", "preset", "guidance_end", "cache_interval", "context_overlap",
                         "feather", "colour_match", "emotion", "upscale", "upscale_fidelity", "resume"],
    "EMOEncodeAudio": ["fps"], "EMOPasteBack": ["feather", "colour_match"], "EMODemoInputs": ["seconds", "seed"],
}
# Where each setting that left the sampler goes, and its old "the model's own" value.
MOVED = {"frames_per_clip": ("EMOSamplerOptions", 0), "motion_frames": ("EMOSamplerOptions", -1),
         "decode_chunk": ("EMOSamplerOptions", 8), "guidance_end": ("EMOSamplerOptions", 1.0),
         "cache_interval": ("EMOSamplerOptions", 1), "pose_weight": ("EMOSamplerOptions", 1.0),
         "face_weight": ("EMOSamplerOptions", 1.0), "lip_weight": ("EMOSamplerOptions", 1.0),
         "head_speed": ("EMOFamilyOptions", 0.0), "context_overlap": ("EMOFamilyOptions", -1),
         "emotion": ("EMOFamilyOptions", "neutral")}


def migration(pack):
    import importlib

    return importlib.import_module(pack.__name__ + ".nodes.migration")


def named(pack, node) -> dict:
    names = [name or "control_after_generate" for name, _ in widgets(pack.NODE_CLASS_MAPPINGS[node["type"]])]
    assert len(names) == len(node["widgets_values"]), node["type"]
    return dict(zip(names, node["widgets_values"]))


def options_of(pack, workflow, node) -> dict[str, dict]:
    """The options nodes feeding `node`'s options input (through any chain): {type: named values}."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow["links"]}
    found = {}
    while True:
        inp = next((i for i in node["inputs"] if i["name"] == "options"), None)
        if inp is None or inp.get("link") is None:
            return found
        node = nodes[links[inp["link"]][1]]
        assert node["type"] not in found
        found[node["type"]] = named(pack, node)


def expected_setting(name, value):
    """What an old value of a moved or changed widget reads as today (stated here, apart from the table)."""
    if name in ("frames_per_clip", "motion_frames", "context_overlap"):
        return "model default" if value == MOVED[name][1] else str(value)
    if name == "fps":
        return "model default" if value == 0 else f"{value:g}"
    if name == "feather":
        return 0.0625 if value == -1 else value / 512
    return value


def check_landed(pack, old, new):
    """Each widget value of each EMO node of `old` (an earlier version's workflow) is where it should be in `new`."""
    nodes = {n["id"]: n for n in new["nodes"]}
    for before in old["nodes"]:
        if before["type"] not in OLD_ORDER:
            continue
        old_values = dict(zip(OLD_ORDER[before["type"]], before["widgets_values"]))
        after = nodes[before["id"]]
        now = named(pack, after)
        options = options_of(pack, new, after)
        for name, value in old_values.items():
            if name in MOVED and before["type"] in ("EMOSampler", "EMOSampleToVideo"):
                kind, magic = MOVED[name]
                if value != magic:
                    assert options[kind][name] == expected_setting(name, value), (before["type"], name)
                else:
                    assert options.get(kind, {}).get(name, expected_setting(name, value)) == expected_setting(name, value)
            elif name in ("steps", "cfg", "preset"):
                zeros = old_values["steps"] == 0 and old_values["cfg"] == 0
                if old_values["preset"] == "custom" and not zeros:
                    assert now["preset"] == "custom" and now[name] == (value or {"steps": 40, "cfg": 3.5}.get(name))
                else:
                    assert now["preset"] == {"custom": "model default", "quality": "model default"}.get(
                        old_values["preset"], old_values["preset"])
            else:
                assert now[name] == pytest.approx(expected_setting(name, value)), (before["type"], name)
        if before["type"] == "EMODemoInputs":
            assert now["control_after_generate"] == "fixed"
        for kind, values in options.items():  # an options node only where a setting differs from its default
            defaults = {k: v[1]["default"] for k, v in pack.NODE_CLASS_MAPPINGS[kind].INPUT_TYPES()["required"].items()}
            assert values != defaults


@pytest.mark.parametrize("path", OLD_WORKFLOWS, ids=lambda p: p.name)
def test_old_saved_workflow_lands_on_todays_widgets(pack, path):
    old = json.loads(path.read_text())
    new = migration(pack).migrate_workflow(old)
    check_widget_values(pack, new)
    check_links(pack, new)
    check_landed(pack, old, new)
    shipped = json.loads((TEMPLATES / path.name).read_text())
    # the same nodes, values and wiring as today's template (which adds layout and, for songs, a family node)
    for node in new["nodes"]:
        if node["type"] == "Note":  # its text was edited
            continue
        twin = next(n for n in shipped["nodes"] if n["id"] == node["id"])
        if node["type"] in ("EMOSampler", "EMOSampleToVideo") and named(pack, node)["preset"] != "custom":
            # steps and cfg the preset decides: the template shows what its model runs, not the widget defaults
            mine, theirs = named(pack, node), named(pack, twin)
            assert {k: v for k, v in mine.items() if k not in ("steps", "cfg")} == \
                {k: v for k, v in theirs.items() if k not in ("steps", "cfg")}, node["type"]
            continue
        assert (twin["type"], twin["widgets_values"]) == (node["type"], node["widgets_values"])


def test_migration_drops_the_saved_view_only_where_it_changed_the_workflow(pack):
    """A migrated old workflow grew (nodes rewritten, options nodes added): its saved view (extra.ds) would
    leave some out, so it is dropped (the frontend's extension sets one that fits, see
    test_migrated_workflow_opens_fully_visible_clear_of_the_minimap); an already current workflow keeps its."""
    for path in OLD_WORKFLOWS:
        old = json.loads(path.read_text())
        assert "ds" in old["extra"]
        assert "ds" not in migration(pack).migrate_workflow(old)["extra"], path.name
    for path in WORKFLOWS:
        current = json.loads(path.read_text())
        assert migration(pack).migrate_workflow(current)["extra"]["ds"] == current["extra"]["ds"], path.name


def planted_old_workflow() -> dict:
    """An earlier version's workflow with every moved setting away from its default: EMO Sampler, EMO Sample
    To Video, EMO Paste Back and EMO Encode Audio in one graph."""
    workflow = json.loads((OLD / "emo_echomimic.json").read_text())
    long = json.loads((OLD / "emo_long_audio.json").read_text())
    to_video = copy.deepcopy(next(n for n in long["nodes"] if n["type"] == "EMOSampleToVideo"))
    to_video.update(id=20, pos=[1100, 800])
    for out in to_video["outputs"]:
        out["links"] = []
    for inp in to_video["inputs"]:
        inp["link"] = None
    workflow["nodes"].append(to_video)
    workflow["last_node_id"] = 20
    settings = {"steps": 25, "cfg": 2.0, "frames_per_clip": 12, "motion_frames": 3, "scheduler": "ddim",
                "decode_chunk": 2, "pose_weight": 1.5, "face_weight": 0.5, "lip_weight": 2.0, "head_speed": 0.05,
                "guidance_end": 0.5, "cache_interval": 2, "context_overlap": 4, "emotion": "happy", "feather": 16}
    for node in workflow["nodes"]:
        order = OLD_ORDER.get(node["type"])
        if node["type"] in ("EMOSampler", "EMOSampleToVideo", "EMOPasteBack"):
            node["widgets_values"] = [settings.get(name, value) for name, value in zip(order, node["widgets_values"])]
        if node["type"] == "EMOEncodeAudio":
            node["widgets_values"] = [24.0]
    return workflow


def test_every_moved_setting_lands_on_its_options_node(pack):
    old = planted_old_workflow()
    new = migration(pack).migrate_workflow(old)
    check_widget_values(pack, new)
    check_links(pack, new)
    check_landed(pack, old, new)
    nodes = {n["type"]: n for n in new["nodes"]}
    sampler = nodes["EMOSampler"]
    assert named(pack, sampler)["preset"] == "custom" and named(pack, sampler)["steps"] == 25
    assert options_of(pack, new, sampler) == {
        "EMOFamilyOptions": {"head_speed": 0.05, "context_overlap": "4", "emotion": "happy"},
        "EMOSamplerOptions": {"frames_per_clip": "12", "motion_frames": "3", "decode_chunk": 2, "guidance_end": 0.5,
                              "cache_interval": 2, "pose_weight": 1.5, "face_weight": 0.5, "lip_weight": 2.0}}
    assert named(pack, nodes["EMOPasteBack"])["feather"] == 16 / 512 and named(pack, nodes["EMOEncodeAudio"]) == {"fps": "24"}
    assert overlaps(old) == [] and overlaps(new) == []  # four options nodes added, each where no node is


def node_migration(workflow: dict) -> dict:
    """web/emo_migrate.js run by node.js on a workflow, as the frontend runs it when the workflow is opened."""
    script = ("import { migrateWorkflow } from './web/emo_migrate.js'; import fs from 'fs';"
              "const table = JSON.parse(fs.readFileSync('web/emo_migrations.json', 'utf8'));"
              "const w = JSON.parse(fs.readFileSync(0, 'utf8')); migrateWorkflow(w, table); process.stdout.write(JSON.stringify(w));")
    done = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(workflow), text=True,
                          capture_output=True, cwd=comfy_stubs.ROOT, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js runs the frontend's migration")
def test_frontend_migration_does_what_the_python_one_does(pack):
    cases = [json.loads(p.read_text()) for p in OLD_WORKFLOWS + WORKFLOWS] + [planted_old_workflow()]
    subgraph = json.loads((OLD / "emo_basic.json").read_text())  # a subgraph's nodes are migrated too
    subgraph["definitions"] = {"subgraphs": [{"id": "s", "nodes": copy.deepcopy(subgraph["nodes"]),
                                              "links": [], "state": {"lastNodeId": 8, "lastLinkId": 0}}]}
    for case in cases + [subgraph]:
        assert node_migration(case) == migration(pack).migrate_workflow(case)
    for path in WORKFLOWS:  # today's workflows are left as they are
        assert node_migration(json.loads(path.read_text())) == json.loads(path.read_text())
    migrated = node_migration(subgraph)["definitions"]["subgraphs"][0]["nodes"]
    assert [n["widgets_values"] for n in migrated if n["type"] == "EMOSampler"] == [[0, "randomize", 40, 3.5,
                                                                                     "model default", "auto"]]


def inline_options(prompt: dict) -> dict:
    """An API prompt with the options nodes written into the inputs that use them (their ids vary)."""
    def value(v):
        if isinstance(v, list) and len(v) == 2 and prompt[v[0]]["class_type"].endswith("Options"):
            node = prompt[v[0]]
            return {"class_type": node["class_type"], **{k: value(x) for k, x in node["inputs"].items()}}
        return v

    return {k: {"class_type": n["class_type"], "inputs": {i: value(x) for i, x in n["inputs"].items()}}
            for k, n in prompt.items() if not n["class_type"].endswith("Options")}


@pytest.mark.parametrize("path", OLD_WORKFLOWS, ids=lambda p: p.name)
def test_old_api_prompt_is_migrated_when_posted(pack, path):
    """An earlier version's API prompt posted to ComfyUI passes the pack's on_prompt handler: it then equals
    the frontend's conversion of the same workflow migrated (and today's API twin unchanged stays so)."""
    import server

    old_api = json.loads((OLD / "api" / f"{path.stem}.api.json").read_text())
    for node in old_api.values():
        node.pop("_meta", None)
    posted = server.PromptServer.instance.trigger_on_prompt({"prompt": copy.deepcopy(old_api)})["prompt"]
    assert posted == migration(pack).migrate_api_prompt(old_api) != old_api
    ui = to_api(pack, migration(pack).migrate_workflow(json.loads(path.read_text())))
    assert inline_options(posted) == inline_options(ui)
    for node_id, node in posted.items():  # every input is one of today's, in its range
        cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls is None:
            continue
        spec = cls.INPUT_TYPES()
        declared = {**spec["required"], **spec.get("optional", {})}
        assert set(spec["required"]) <= set(node["inputs"]) <= set(declared), node_id
        for name, value in node["inputs"].items():
            kind = declared[name][0]
            if isinstance(kind, list) and name not in ("checkpoint", "model"):  # files: what this machine has
                assert value in kind, (node_id, name, value)
    today = json.loads((TEMPLATES / "api" / path.name.replace(".json", ".api.json")).read_text())
    assert migration(pack).migrate_api_prompt(today) == today


def test_migration_table_matches_the_nodes(pack):
    """The shared table states today's widget order of each node it migrates and its options nodes' defaults
    exactly as INPUT_TYPES does, and tells every earlier layout apart from today's by its length."""
    table = json.loads((comfy_stubs.ROOT / "web" / "emo_migrations.json").read_text())
    for kind, spec in {**table["nodes"], **table["options_nodes"]}.items():
        cls = pack.NODE_CLASS_MAPPINGS[kind]
        assert spec["widgets"] == [n or "control_after_generate" for n, _ in widgets(cls)], kind
        lengths = [len(old) for old in spec.get("old", [])]
        assert len(spec["widgets"]) not in lengths and len(set(lengths)) == len(lengths), kind
    for kind, spec in table["options_nodes"].items():
        required = pack.NODE_CLASS_MAPPINGS[kind].INPUT_TYPES()["required"]
        assert spec["defaults"] == [required[n][1]["default"] for n in spec["widgets"]]
    for kind, order in OLD_ORDER.items():  # the last layout before today's, as this test states it, comes first
        assert table["nodes"][kind]["old"][:1] == ([order] if len(order) > 2 or kind == "EMODemoInputs" else [])


# The first layouts of the two samplers (before head speed, presets, context overlap, emotion, resume, upscale).
FIRST_SAMPLER = ["seed", "control_after_generate", "steps", "cfg", "frames_per_clip", "motion_frames", "scheduler",
                 "decode_chunk", "pose_weight", "face_weight", "lip_weight"]
FIRST_TO_VIDEO = ["seed", "control_after_generate", "steps", "cfg", "frames_per_clip", "motion_frames", "scheduler",
                  "filename_prefix", "crf", "decode_chunk", "pose_weight", "face_weight", "lip_weight", "head_speed",
                  "preset", "guidance_end", "cache_interval", "context_overlap", "feather", "colour_match"]


@pytest.mark.parametrize("steps,cfg,preset", [(0, 0.0, "model default"), (30, 2.5, "custom")])
def test_earliest_saved_samplers_land_too(pack, steps, cfg, preset):
    """A sampler saved before presets existed (its widgets decided, 0 meaning the model's own) and a Sample To
    Video saved before emotion, resume and upscale: each value lands where it should, the rest take defaults."""
    workflow = json.loads((OLD / "emo_long_audio.json").read_text())
    sampler = json.loads((OLD / "emo_basic.json").read_text())["nodes"][5]
    assert sampler["type"] == "EMOSampler"
    sampler.update(id=30, pos=[1200, 0], inputs=[])
    sampler["outputs"][0]["links"] = []
    sampler["widgets_values"] = [7, "fixed", steps, cfg, 12, 3, "euler", 2, 1.5, 0.5, 2.0]
    workflow["nodes"].append(sampler)
    to_video = next(n for n in workflow["nodes"] if n["type"] == "EMOSampleToVideo")
    to_video["widgets_values"] = [7, "fixed", steps, cfg, 0, -1, "ddim", "EMO/old", 23, 4, 1.0, 1.0, 1.0, 0.05,
                                  "fast", 1.0, 1, 5, 20, True]
    new = migration(pack).migrate_workflow(workflow)
    if shutil.which("node"):
        assert node_migration(workflow) == new
    check_widget_values(pack, new)
    check_links(pack, new)
    nodes = {n["id"]: n for n in new["nodes"]}
    assert named(pack, nodes[30]) == {"seed": 7, "control_after_generate": "fixed", "steps": steps or 40,
                                      "cfg": cfg or 3.5, "preset": preset, "scheduler": "euler"}
    assert options_of(pack, new, nodes[30]) == {"EMOSamplerOptions": {
        "frames_per_clip": "12", "motion_frames": "3", "decode_chunk": 2, "guidance_end": 1.0, "cache_interval": 1,
        "pose_weight": 1.5, "face_weight": 0.5, "lip_weight": 2.0}}
    assert named(pack, nodes[to_video["id"]]) == {
        "seed": 7, "control_after_generate": "fixed", "steps": steps or 40, "cfg": cfg or 3.5, "preset": "fast",
        "scheduler": "ddim", "filename_prefix": "EMO/old", "crf": 23, "feather": 20 / 512, "colour_match": True,
        "upscale": 1, "upscale_fidelity": 0.5, "resume": True}
    assert options_of(pack, new, nodes[to_video["id"]]) == {
        "EMOFamilyOptions": {"head_speed": 0.05, "context_overlap": "5", "emotion": "auto"},
        "EMOSamplerOptions": {"frames_per_clip": "model default", "motion_frames": "model default", "decode_chunk": 4,
                              "guidance_end": 1.0, "cache_interval": 1, "pose_weight": 1.0, "face_weight": 1.0,
                              "lip_weight": 1.0}}


@pytest.mark.parametrize("path", OLD_WORKFLOWS, ids=lambda p: p.name)
def test_migrated_options_nodes_are_placed_where_no_node_is(pack, path):
    """The EMO Sampler Options / EMO Family Options nodes the migration adds to an earlier version's workflow
    (Python for scripts and API users, web/emo_migrate.js in the frontend) land where no node is: no two
    nodes of the migrated workflow overlap, title bars included."""
    old = json.loads(path.read_text())
    assert overlaps(old) == []  # the saved layout itself is clean
    new = migration(pack).migrate_workflow(old)
    assert overlaps(new) == [], [(a, b) for a, b in overlaps(new)]
    if shutil.which("node"):
        assert overlaps(node_migration(old)) == []


# How wide the frontends draw these nodes at least, measured with tests/frontend_screenshots.py: Load EMO Model
# 407 px in 1.27.10 with EchoMimic's acc checkpoint name, up to about 430 in 1.58.1; Separate Vocals about 395.
DRAWN_WIDTHS = {"LoadEMOModel": 440, "EMOSeparateVocals": 400}


def drawn_rectangles(pack, workflow) -> dict:
    """rectangles(), each EMO node as tall as today's frontends draw its slots and widgets (20 px per slot row,
    24 per widget, 8 padding; the class's own inputs, outputs and widgets) and as wide as they draw it, never
    smaller than saved."""
    out = {}
    for node in workflow["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        w = max(w, DRAWN_WIDTHS.get(node["type"], 0))
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is not None:
            sockets = [i for i in node["inputs"] if not i.get("widget")]
            h = max(h, 20 * max(len(sockets), len(cls.RETURN_TYPES)) + 24 * len(widgets(cls)) + 8)
        out[node["id"]] = (x, y - TITLE_BAR, x + w, y + h)
    return out


def drawn_overlaps(pack, workflow) -> list[tuple[int, int]]:
    boxes = sorted(drawn_rectangles(pack, workflow).items())
    return [(a, b) for i, (a, ra) in enumerate(boxes) for b, rb in boxes[i + 1:]
            if min(ra[2], rb[2]) > max(ra[0], rb[0]) and min(ra[3], rb[3]) > max(ra[1], rb[1])]


@pytest.mark.parametrize("path", OLD_WORKFLOWS, ids=lambda p: p.name)
def test_migrated_nodes_drawn_at_todays_height_cover_no_node(pack, path):
    """An earlier version saved some EMO nodes shorter than today's frontends draw them (Load EMO Model: 150 px
    for 8 widgets); migrated, each such node has its drawn height and the nodes under it moved down, so that
    nothing is drawn over anything, in Python and in the frontend alike, and the graph keeps its columns."""
    old = json.loads(path.read_text())
    new = migration(pack).migrate_workflow(old)
    assert drawn_overlaps(pack, new) == []
    before = {n["id"]: n for n in old["nodes"]}
    for node in new["nodes"]:
        if node["id"] in before:  # a moved node only moved down, and only as far as a node above it needed
            x, y = before[node["id"]]["pos"]
            assert node["pos"][0] == x and node["pos"][1] >= y
    if shutil.which("node"):
        assert node_migration(old) == new


def test_make_room_moves_a_column_down_as_one_and_leaves_side_by_side_nodes(pack):
    """A node that grows pushes the node under it, which pushes the one under that; a node beside it (no
    column in common) stays; Python and the frontend give the same places."""
    table = json.loads((comfy_stubs.ROOT / "web" / "emo_migrations.json").read_text())
    title, margin = table["placement"]["title_bar"], table["placement"]["margin"]
    graph = {"nodes": [{"id": 1, "type": "LoadEMOModel", "pos": [0, 0], "size": [320, 100]},
                       {"id": 2, "type": "LoadImage", "pos": [100, 140], "size": [320, 300]},
                       {"id": 3, "type": "LoadAudio", "pos": [0, 480], "size": [320, 150]},
                       {"id": 4, "type": "EMOSampler", "pos": [480, 0], "size": [340, 400]}]}
    made = copy.deepcopy(graph)
    migration(pack).make_room(made)
    drawn = 20 * 1 + 24 * 8 + 8  # Load EMO Model: one output, eight widgets
    room = 22 * 1 + 30 * 8 + 20  # as 1.58.1's Vue nodes draw it (about 280 px measured)
    pos = {n["id"]: n["pos"] for n in made["nodes"]}
    assert made["nodes"][0]["size"] == [DRAWN_WIDTHS["LoadEMOModel"], drawn]
    assert pos[2] == [100, room + margin + title]  # under the grown node, clear of its Vue height
    assert pos[3] == [0, pos[2][1] + 300 + margin + title]  # under the moved one
    assert pos[4] == [480, 0] and made["nodes"][3]["size"] == [340, 400]  # beside it, tall enough already
    if shutil.which("node"):
        script = ("import { makeRoom } from './web/emo_migrate.js'; import fs from 'fs';"
                  "const table = JSON.parse(fs.readFileSync('web/emo_migrations.json', 'utf8'));"
                  "const g = JSON.parse(fs.readFileSync(0, 'utf8')); makeRoom(table, g); process.stdout.write(JSON.stringify(g));")
        done = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(graph), text=True,
                              capture_output=True, cwd=comfy_stubs.ROOT, check=True)
        assert json.loads(done.stdout) == made


def test_placement_rows_are_the_nodes_slots_and_widgets(pack):
    """The migration's drawn heights come from the table's rows: per EMO node, its slot rows (the larger of its
    socket inputs and outputs) and its widgets, as the classes declare them."""
    table = json.loads((comfy_stubs.ROOT / "web" / "emo_migrations.json").read_text())
    expected = {}
    for kind, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        sockets = [n for group in ("required", "optional") for n, (k, *_) in spec.get(group, {}).items()
                   if not (isinstance(k, list) or k in WIDGET_TYPES)]
        expected[kind] = [max(len(sockets), len(cls.RETURN_TYPES)), len(widgets(cls))]
    assert table["placement"]["rows"] == expected


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js runs the frontend's view")
def test_migrated_workflow_opens_fully_visible_clear_of_the_minimap():
    """The view a migrated workflow opens with (web/emo_migrate.js's openingView, set as extra.ds) puts every
    node, title bar included, inside a 1280x800 window less the sidebar, top bars and edges, and none in the
    minimap's corner; without the minimap the graph gets the whole frame and is drawn at least as large."""
    table = json.loads((comfy_stubs.ROOT / "web" / "emo_migrations.json").read_text())
    v = table["placement"]["view"]
    script = ("import { migrateWorkflow, openingView } from './web/emo_migrate.js'; import fs from 'fs';"
              "const table = JSON.parse(fs.readFileSync('web/emo_migrations.json', 'utf8'));"
              "const cases = JSON.parse(fs.readFileSync(0, 'utf8')).map((w) => { migrateWorkflow(w, table); return w; });"
              "process.stdout.write(JSON.stringify(cases.map((w) => [w, [true, false].map((minimap) =>"
              " openingView(table, w, {width: 1280, height: 800, left: 0, top: 40, minimap}))])));")
    cases = [json.loads(p.read_text()) for p in OLD_WORKFLOWS]
    done = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(cases), text=True,
                          capture_output=True, cwd=comfy_stubs.ROOT, check=True)
    for workflow, (with_minimap, without) in json.loads(done.stdout):
        for view, minimap in ((with_minimap, v["minimap"]), (without, [0, 0])):
            scale, (ox, oy) = view["scale"], view["offset"]
            for x0, y0, x1, y1 in rectangles(workflow).values():  # on the screen: canvas at y = 40
                sx0, sy0, sx1, sy1 = (x0 + ox) * scale, (y0 + oy) * scale + 40, (x1 + ox) * scale, (y1 + oy) * scale + 40
                assert sx0 >= v["left"] - 1e-6 and sy0 >= v["top"] - 1e-6
                assert sx1 <= 1280 - v["right"] + 1e-6 and sy1 <= 800 - v["bottom"] + 1e-6
                assert sx1 <= 1280 - v["right"] - minimap[0] + 1e-6 or sy1 <= 800 - v["bottom"] - minimap[1] + 1e-6
        assert without["scale"] >= with_minimap["scale"]


def test_free_spot_is_the_nearest_free_place_in_python_and_the_frontend(pack):
    """free_spot (Python) and freeSpot (web/emo_migrate.js) give the same place: beside the target when that is
    free; else the nearest free grid point, never covering a node, on crowded graphs of many shapes."""
    import random

    free_spot = migration(pack).free_spot
    table = json.loads((comfy_stubs.ROOT / "web" / "emo_migrations.json").read_text())
    gap = table["placement"]["gap"]
    target = {"id": 1, "pos": [800, 300], "size": [340, 250]}
    assert free_spot({"nodes": [target]}, target, 320, 250) == [800 - gap - 320, 300]
    rng = random.Random(7)
    cases = []
    for _ in range(40):
        nodes = [target] + [{"id": k, "pos": [rng.randrange(-200, 1600, 10), rng.randrange(-100, 1200, 10)],
                             "size": [rng.randrange(80, 420, 10), rng.randrange(60, 400, 10)]} for k in range(2, 14)]
        nodes = [n for n in nodes if n is target or overlaps({"nodes": [target, n]}) == []]
        cases.append(({"nodes": nodes}, rng.choice([(320, 250), (320, 130)]), rng.choice([0, 290])))
    spots = [free_spot(graph, target, w, h, below) for graph, (w, h), below in cases]
    for (graph, (w, h), _), spot in zip(cases, spots):
        placed = {"nodes": graph["nodes"] + [{"id": 99, "pos": spot, "size": [w, h]}]}
        assert [pair for pair in overlaps(placed) if 99 in pair] == []
    if shutil.which("node"):
        script = ("import { freeSpot } from './web/emo_migrate.js'; import fs from 'fs';"
                  "const table = JSON.parse(fs.readFileSync('web/emo_migrations.json', 'utf8'));"
                  "const cases = JSON.parse(fs.readFileSync(0, 'utf8'));"
                  "process.stdout.write(JSON.stringify(cases.map(([g, [w, h], b]) => freeSpot(table, g, g.nodes[0], w, h, b))));")
        done = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(cases), text=True,
                              capture_output=True, cwd=comfy_stubs.ROOT, check=True)
        assert json.loads(done.stdout) == spots
