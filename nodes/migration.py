"""Saved EMO nodes of earlier versions, brought to today's widgets.

The table is web/emo_migrations.json, which the frontend's web/emo_migrate.js reads too: that one
rewrites workflows as they are opened; this one rewrites API-format prompts as they are posted (a
ComfyUI on_prompt handler, see register()), and UI-format workflows for scripts and tests. Settings
that moved off the sampler (clip length, region weights, family settings, ...) go to EMO Sampler
Options / EMO Family Options nodes that are added and connected, only where they differ from the
defaults. Imports nothing of ComfyUI or torch."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

TABLE = json.loads((Path(__file__).resolve().parents[1] / "web" / "emo_migrations.json").read_text())
NODES, OPTION_NODES, VALUES = TABLE["nodes"], TABLE["options_nodes"], TABLE["values"]
MODEL_DEFAULT, OPTIONS_TYPE, SAMPLER = TABLE["model_default"], TABLE["options_type"], TABLE["sampler"]
PLACEMENT = TABLE["placement"]
log = logging.getLogger(__name__)


def convert_value(name: str, value: Any) -> Any:
    """A widget value as today's widget takes it (values already of today's kind are kept)."""
    rule = VALUES.get(name)
    if rule is not None and "renamed" in rule and isinstance(value, str):  # an old default that has a new name
        return rule["renamed"].get(value, value)
    if rule is None or isinstance(value, (str, bool)) or value is None:
        return value
    if "choices" in rule:  # a number → the nearest listed rate
        if value < rule["model_default_below"]:
            return MODEL_DEFAULT
        return min(rule["choices"], key=lambda c: abs(float(c) - value))
    if "model_default_below" in rule:  # a number, with a magic value for the model's own
        return MODEL_DEFAULT if value < rule["model_default_below"] else str(round(value))
    if value < rule["default_below"]:  # feather: -1 (the default band), else pixels → share of a crop
        return rule["default"]
    if value > rule["pixels_above"]:
        return min(0.5, value / rule["pixels_of_side"])
    return value


def migrate_values(node_type: str, values: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, list]]]:
    """Named widget values of a saved node → today's, and the options nodes [(type, widgets_values)] to
    connect to it, in chain order (each into the next, the last into the node)."""
    spec = NODES.get(node_type)
    if spec is None:
        return values, []
    moved = not set(values) <= set(spec["widgets"]) | {"control_after_generate"}
    new = {name: convert_value(name, values[name]) for name in spec["widgets"] if name in values}
    for name, value in spec.get("added", {}).items():
        new.setdefault(name, value)
    options = []
    if moved and spec.get("options_input"):
        new.update(sampler_values(values))
        for kind, option in OPTION_NODES.items():
            given = [convert_value(n, values[n]) if n in values else d
                     for n, d in zip(option["widgets"], option["defaults"])]
            if given != option["defaults"]:
                options.append((kind, given))
    return new, options


def sampler_values(old: dict[str, Any]) -> dict[str, Any]:
    """preset, steps and cfg: an old "custom" (or a sampler from before presets) with steps and cfg 0 (the
    model's own) is "model default"; a 0 left in steps or cfg becomes the widget's default (the preset decides
    what is used)."""
    preset = old.get("preset", SAMPLER["custom"])
    preset = SAMPLER["presets"].get(preset, preset)
    if preset == SAMPLER["custom"] and all(old.get(n) == 0 for n in SAMPLER["model_default_when_zero"]):
        preset = MODEL_DEFAULT
    out = {"preset": preset}
    for name, default in SAMPLER["widget_defaults"].items():
        if name in old:
            out[name] = old[name] or default
    return out


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def migrate_api_prompt(prompt: dict[str, dict]) -> dict[str, dict]:
    """An API-format prompt ({id: {class_type, inputs}}) with its EMO nodes as today's (a new dict)."""
    prompt = copy.deepcopy(prompt)
    for node_id, node in list(prompt.items()):
        spec = NODES.get(node.get("class_type"))
        if spec is None or not isinstance(node.get("inputs"), dict):
            continue
        inputs = node["inputs"]
        links = {k: v for k, v in inputs.items() if is_link(v)}
        widgets = {k: v for k, v in inputs.items() if not is_link(v)}
        new, options = migrate_values(node["class_type"], widgets)
        node["inputs"] = {**{k: v for k, v in new.items() if k != "control_after_generate"}, **links}
        upstream = None
        for kind, values in options:
            option_id = f"emo_{kind}_{node_id}"
            option_inputs = dict(zip(OPTION_NODES[kind]["widgets"], values))
            if upstream is not None:
                option_inputs["options"] = [upstream, 0]
            prompt[option_id] = {"class_type": kind, "inputs": option_inputs}
            upstream = option_id
        if upstream is not None:
            node["inputs"]["options"] = [upstream, 0]
    return prompt


def migrate_workflow(workflow: dict) -> dict:
    """A UI-format workflow (as saved by the frontend) with its EMO nodes as today's (a new dict): what
    web/emo_migrate.js does when the workflow is opened. Where a node was rewritten or added, EMO nodes saved
    shorter than today's widgets need grow taller and the nodes under them move down (make_room), and the saved view
    (extra.ds) is dropped, so that the frontend fits the view to the grown graph."""
    workflow = copy.deepcopy(workflow)
    changed = _migrate_graph(workflow)
    for subgraph in workflow.get("definitions", {}).get("subgraphs", []):
        changed = _migrate_graph(subgraph) or changed
    if changed:
        for graph in [workflow, *workflow.get("definitions", {}).get("subgraphs", [])]:
            make_room(graph)
        if isinstance(workflow.get("extra"), dict):
            workflow["extra"].pop("ds", None)
    return workflow


def drawn_height(node: dict, rule: str = "drawn") -> float:
    """How tall today's frontends draw `node`: its saved height, or more for an EMO node whose widgets need
    more rows than an earlier version saved room for (the table's placement.rows and drawn; rule "room": the
    taller Vue nodes, which nodes under it are kept clear of)."""
    height = (node.get("size") or (0, 0))[1]
    rows = PLACEMENT["rows"].get(node.get("type"))
    if rows is None:
        return height
    drawn = PLACEMENT[rule]
    return max(height, rows[0] * drawn["slot"] + rows[1] * drawn["widget"] + drawn["padding"])


def drawn_width(node: dict) -> float:
    """How wide today's frontends draw `node` at least: its saved width, or the table's for an EMO node whose
    title and widgets need more (placement.widths)."""
    return max((node.get("size") or (0, 0))[0], PLACEMENT["widths"].get(node.get("type"), 0))


def make_room(graph: dict) -> None:
    """In place: each EMO node gets the size today's frontends draw it at, and a node that then lies under
    another (side by side at all, title bars included) moves down until it is margin px clear of the height
    Vue nodes draw that one at (placement.room), nearest
    the top first (the same as web/emo_migrate.js's makeRoom, tested equal)."""
    title, margin = PLACEMENT["title_bar"], PLACEMENT["margin"]
    nodes = [n for n in graph.get("nodes", []) if n.get("pos") is not None and n.get("size") is not None]
    for node in nodes:
        node["size"] = [drawn_width(node), drawn_height(node)]
    for _ in range(len(nodes) ** 2 + 1):  # each move takes one node below one more; bounded
        order = sorted(nodes, key=lambda n: (n["pos"][1], n["pos"][0], n.get("id", 0)))
        pair = next(((a, b) for i, b in enumerate(order) for a in order[:i]
                     if min(a["pos"][0] + a["size"][0], b["pos"][0] + b["size"][0]) > max(a["pos"][0], b["pos"][0])
                     and a["pos"][1] + drawn_height(a, "room") + margin > b["pos"][1] - title), None)
        if pair is None:
            return
        a, b = pair
        b["pos"] = [b["pos"][0], a["pos"][1] + drawn_height(a, "room") + margin + title]


def _migrate_graph(graph: dict) -> bool:
    """Migrates in place; whether a node was rewritten to today's widget layout or an options node added."""
    changed = False
    for node in list(graph.get("nodes", [])):
        spec = NODES.get(node.get("type"))
        values = node.get("widgets_values")
        if spec is None or not isinstance(values, list):
            continue
        layout = next((old for old in spec["old"] if len(old) == len(values)), None)
        if layout is None and len(values) != len(spec["widgets"]):
            log.warning("EMO: %s node %s has %d widget values, a layout this version does not know; left as it is.",
                        node["type"], node.get("id"), len(values))
            continue
        new, options = migrate_values(node["type"], dict(zip(layout or spec["widgets"], values)))
        node["widgets_values"] = [new[name] for name in spec["widgets"]]
        if layout is not None:
            _fix_inputs(graph, node, spec)
        upstream = None
        for kind, option_values in options:
            upstream = _add_options_node(graph, node, kind, option_values, upstream)
        if upstream is not None:
            slot = next(i for i, inp in enumerate(node["inputs"]) if inp["name"] == "options")
            _connect(graph, upstream, node, slot)
        changed = changed or layout is not None or bool(options)
    return changed


def _fix_inputs(graph: dict, node: dict, spec: dict) -> None:
    """Drop the input slots of widgets that are gone (and their links), give today's type to a widget's slot
    whose kind changed, add the options slot; links keep pointing at their slot."""
    kept, gone = [], []
    for inp in node.get("inputs", []):
        widget = (inp.get("widget") or {}).get("name")
        if widget is not None and widget not in spec["widgets"]:
            gone.append(inp.get("link"))
            continue
        if widget in TABLE["widget_types"]:
            inp["type"] = TABLE["widget_types"][widget]
        kept.append(inp)
    if spec.get("options_input") and not any(inp["name"] == "options" for inp in kept):
        kept.append({"name": "options", "type": OPTIONS_TYPE, "link": None})
    node["inputs"] = kept
    for link_id in filter(None, gone):
        _remove_link(graph, link_id)
    for slot, inp in enumerate(kept):
        if inp.get("link") is not None:
            _set_link(graph, inp["link"], target_slot=slot)


def _link_fields(link) -> dict:
    if isinstance(link, dict):
        return link
    return dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))


def _set_link(graph: dict, link_id: int, **fields) -> None:
    for i, link in enumerate(graph.get("links", [])):
        if _link_fields(link)["id"] == link_id:
            if isinstance(link, dict):
                link.update(fields)
            else:
                graph["links"][i] = list({**_link_fields(link), **fields}.values())


def _remove_link(graph: dict, link_id: int) -> None:
    graph["links"] = [l for l in graph.get("links", []) if _link_fields(l)["id"] != link_id]
    for node in graph.get("nodes", []):
        for out in node.get("outputs") or []:
            if link_id in (out.get("links") or []):
                out["links"].remove(link_id)


def _next_id(graph: dict, kind: str) -> int:
    """A fresh node or link id, counted in the graph's own bookkeeping (0.4: last_node_id; 1.0: state)."""
    state_key, flat_key = {"node": ("lastNodeId", "last_node_id"), "link": ("lastLinkId", "last_link_id")}[kind]
    items = graph.get("nodes" if kind == "node" else "links", [])
    used = max([0] + [(n["id"] if kind == "node" else _link_fields(n)["id"]) for n in items])
    if isinstance(graph.get("state"), dict):
        new = max(used, graph["state"].get(state_key, 0)) + 1
        graph["state"][state_key] = new
    else:
        new = max(used, graph.get(flat_key, 0)) + 1
        graph[flat_key] = new
    return new


def _add_options_node(graph: dict, target: dict, kind: str, values: list, upstream: dict | None) -> dict:
    """An options node placed in free space near `target` (left of it first), fed by `upstream` (if any)."""
    width, height = OPTION_NODES[kind]["size"]
    below = sum(OPTION_NODES[k]["size"][1] + 40 for k in list(OPTION_NODES)[: list(OPTION_NODES).index(kind)])
    node = {"id": _next_id(graph, "node"), "type": kind, "pos": free_spot(graph, target, width, height, below),
            "size": [width, height], "flags": {}, "order": 0, "mode": 0,
            "inputs": [{"name": "options", "type": OPTIONS_TYPE, "link": None}],
            "outputs": [{"name": "options", "type": OPTIONS_TYPE, "links": [], "slot_index": 0}],
            "properties": {"Node name for S&R": kind}, "widgets_values": values}
    graph["nodes"].append(node)
    if upstream is not None:
        _connect(graph, upstream, node, 0)
    return node


def _box(node: dict, title: float, min_width: float = 0) -> tuple[float, float, float, float]:
    """A node's area on the canvas, title bar included, at least min_width wide: (x0, y0, x1, y1)."""
    (x, y), (w, h) = node.get("pos") or (0, 0), node.get("size") or (0, 0)
    return x, y - title, x + max(w, min_width), y + h


def free_spot(graph: dict, target: dict, width: float, height: float, below: float = 0) -> list:
    """Where a new node of this size goes beside `target` without covering any node (the table's placement:
    the same search as web/emo_migrate.js's freeSpot, tested equal): the grid point nearest to the place left
    of `target` (`below` lower down) whose rectangle, title bar and margin included, meets no node (each
    counted at least min_width wide, as the frontends widen a narrow node to its title and widgets), not above
    or left of the graph's nodes (where the view opens)."""
    p = PLACEMENT
    title, margin, step, reach = p["title_bar"], p["margin"], p["step"], p["range"]
    boxes = [_box(n, title, p["min_width"]) for n in graph.get("nodes", [])]
    tx, ty = (target.get("pos") or (0, 0))[:2]
    x0, y0 = tx - p["gap"] - width, ty + below
    left, top = min([b[0] for b in boxes] + [x0]), min([b[1] for b in boxes] + [y0 - title])
    for distance in range(2 * reach + 1):
        for j in range(-min(distance, reach), min(distance, reach) + 1):
            across = distance - abs(j)
            for i in ((-across, across) if across else (0,)):
                x, y = x0 + i * step, y0 + j * step
                if abs(i) > reach or x < left or y - title < top:
                    continue
                area = (x - margin, y - title - margin, x + width + margin, y + height + margin)
                if not any(min(area[2], b[2]) > max(area[0], b[0]) and min(area[3], b[3]) > max(area[1], b[1])
                           for b in boxes):
                    return [x, y]
    return [x0, y0]  # no free place within reach: beside the target, as before


def _connect(graph: dict, origin: dict, target: dict, slot: int) -> None:
    link_id = _next_id(graph, "link")
    fields = {"id": link_id, "origin_id": origin["id"], "origin_slot": 0, "target_id": target["id"],
              "target_slot": slot, "type": OPTIONS_TYPE}
    links = graph.setdefault("links", [])
    object_links = bool(links) and isinstance(links[0], dict) or isinstance(graph.get("state"), dict)
    links.append(fields if object_links else list(fields.values()))
    origin["outputs"][0].setdefault("links", []).append(link_id)
    target["inputs"][slot]["link"] = link_id


def on_prompt(json_data: dict) -> dict:
    """ComfyUI's on_prompt hook: a posted prompt's EMO nodes of an earlier version are brought up to date."""
    prompt = json_data.get("prompt")
    if isinstance(prompt, dict):
        migrated = migrate_api_prompt(prompt)
        if migrated != prompt:
            log.info("EMO: nodes of an earlier version in the prompt were brought to today's widgets.")
            json_data["prompt"] = migrated
    return json_data


def register() -> None:
    """Hook on_prompt into ComfyUI's server (nothing to do where no server runs, e.g. in scripts)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is not None and hasattr(instance, "add_on_prompt_handler"):
        instance.add_on_prompt_handler(on_prompt)
