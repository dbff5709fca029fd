"""Shipped workflows agree with the nodes: widget values, link types, and the API-format twins."""

import json
from pathlib import Path

import pytest

import comfy_stubs

WORKFLOWS = sorted((comfy_stubs.ROOT / "workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# Core nodes used by the workflows: their widget names, as ComfyUI 0.3.64 defines them.
CORE_WIDGETS = {"LoadImage": ["image", None], "LoadAudio": ["audio", None, None], "Note": [None]}


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
    workflow = json.loads(path.read_text())
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
                assert isinstance(value, str) and value.endswith((".pth", ".safetensors"))
            elif isinstance(kind, list):
                assert value in kind, (node["type"], name, value)
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and options.get("min", value) <= value <= options.get("max", value)
            elif kind == "STRING":
                assert isinstance(value, str)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_links_connect_matching_types(pack, path):
    workflow = json.loads(path.read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert out["type"] == inp["type"] == kind and link_id in out["links"] and inp["link"] == link_id
        cls = pack.NODE_CLASS_MAPPINGS.get(nodes[src]["type"])
        if cls is not None:
            assert cls.RETURN_TYPES[src_slot] == kind


def to_api(pack, workflow) -> dict:
    """Independent UI → API conversion, driven by the nodes' INPUT_TYPES (as the frontend does)."""
    links = {l[0]: l for l in workflow["links"]}
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def source(link_id):
        """Where a link's value comes from: through a bypassed node (mode 4), its input of the same type."""
        link = links[link_id]
        node = nodes[link[1]]
        if node.get("mode") == 4:
            through = next(i for i in node["inputs"] if i["type"] == link[5] and i.get("link") is not None)
            return source(through["link"])
        return [str(link[1]), link[2]]

    api = {}
    for node in workflow["nodes"]:
        if node["type"] == "Note" or node.get("mode") == 4:
            continue
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        names = [n for n, _ in widgets(cls)] if cls else CORE_WIDGETS[node["type"]]
        inputs = {n: v for n, v in zip(names, node["widgets_values"]) if n}
        for inp in node["inputs"]:
            if inp.get("link") is not None:
                inputs[inp["name"]] = source(inp["link"])
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_api_twin_matches_ui_workflow(pack, path):
    twin = comfy_stubs.ROOT / "workflows" / "api" / f"{path.stem}.api.json"
    shipped = json.loads(twin.read_text())
    for node in shipped.values():
        node.pop("_meta", None)
    assert shipped == to_api(pack, json.loads(path.read_text()))
    for node_id, node in shipped.items():  # every required input is given
        cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls:
            assert set(cls.INPUT_TYPES()["required"]) <= set(node["inputs"]), node_id


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_downloadable_file_carries_the_metadata_the_frontend_reads(path):
    """The frontend's Missing Models panel offers a file when the workflow's `models` (and the node's
    properties.models) give its name (the widget value), an https://huggingface.co/ URL and a directory."""
    from emo_pipeline.io.download.catalogue import DOWNLOADS

    workflow = json.loads(path.read_text())
    targets = {f.target: f for d in DOWNLOADS.values() for f in d.files}
    expected = []
    for node in workflow["nodes"]:
        values = node.get("widgets_values") or []
        # .onnx files (the vocal separator) are left out: no frontend offers them for download
        named = [v for v in values if isinstance(v, str) and v in targets and not v.endswith(".onnx")]
        entries = [{"name": v, "url": f"https://huggingface.co/{targets[v].repo}/resolve/main/{targets[v].path}",
                    "directory": "emo"} for v in dict.fromkeys(named)]
        assert node.get("properties", {}).get("models", []) == entries, node["type"]
        expected += [e for e in entries if e not in expected]
    assert workflow["models"] == expected
    for entry in workflow["models"]:  # what the frontend (1.58.1) accepts: allowed host, a model file suffix
        assert entry["url"].startswith("https://huggingface.co/") and entry["name"].endswith((".pth", ".safetensors"))
    uses_hallo = any(n["type"] == "LoadEMOModel" and n["widgets_values"][0] == "hallo/net.pth" for n in workflow["nodes"])
    assert uses_hallo == any(e["name"] == "hallo/net.pth" for e in workflow["models"])
