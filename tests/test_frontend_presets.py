"""web/emo_presets.js (greys out the sampler widgets a preset decides), its decision part run by node.js:
the widgets it greys for each preset are the ones nodes/sampler.py says the preset decides, for both sampler
nodes, with web/emo_presets.json and without it (the built-in rules); a connected EMO Sampler Options node's
settings are greyed only when every sampler they reach has a preset that decides them; greying changes no
widget value. tests/frontend_screenshots.py checks the same in a real browser, in both frontends."""

import importlib
import json
import shutil
import subprocess

import pytest

import comfy_stubs

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node.js runs the frontend's extension")
TABLE = comfy_stubs.ROOT / "web" / "emo_presets.json"


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    comfy_stubs.install(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("out"))
    return importlib.import_module(comfy_stubs.load_pack().__name__ + ".nodes.sampler")


def run_js(body: str, data) -> object:
    """`body` run as an ES module with web/emo_presets.js imported as `m` and `data` (JSON) as `data`;
    what it assigns to `out` comes back."""
    script = ("import * as m from './web/emo_presets.js'; import fs from 'fs';"
              "const data = JSON.parse(fs.readFileSync(0, 'utf8')); let out = null;"
              f"{body}; process.stdout.write(JSON.stringify(out));")
    done = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(data), text=True,
                          capture_output=True, cwd=comfy_stubs.ROOT, check=True)
    return json.loads(done.stdout)


def widgets_of(cls, preset: str) -> list[dict]:
    """The node's widgets as the frontend makes them (name, value), with the preset chosen."""
    required = cls.INPUT_TYPES()["required"]
    return [{"name": name, "value": preset if name == "preset" else spec[1].get("default") if len(spec) > 1 else None}
            for name, spec in required.items() if isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT")]


@pytest.mark.parametrize("with_table", [True, False], ids=["emo_presets.json", "built-in rules"])
def test_greyed_widgets_are_the_ones_the_preset_decides(sampler, with_table):
    table = json.loads(TABLE.read_text()) if with_table else None
    cases = []
    for node in ("EMOSampler", "EMOSampleToVideo"):
        cls = getattr(importlib.import_module(sampler.__name__.rsplit(".", 1)[0] + ".sample_to_video"), node) \
            if node == "EMOSampleToVideo" else sampler.EMOSampler
        choices = cls.INPUT_TYPES()["required"]["preset"][0]
        assert choices == sampler.PRESET_CHOICES
        cases += [(node, preset, widgets_of(cls, preset)) for preset in choices]
    got = run_js("const t = data.table ? m.readTable(data.table) : null;"
                 "out = data.cases.map(([node, preset, widgets]) => m.widgetStates(t, widgets));",
                 {"table": table, "cases": cases})
    for (node, preset, _), states in zip(cases, got):
        decided = set(sampler.PRESET_DECIDES[preset])
        assert {w for w, off in states.items() if off} == decided, (node, preset)
        assert set(states) == {"steps", "cfg", "scheduler"}, (node, preset)  # the others are left alone
    # the shipped workflows' choice greys steps and cfg, not the scheduler (model default runs it)
    assert {w for w, off in got[0].items() if off} == {"steps", "cfg"}


def test_a_node_without_a_preset_widget_is_left_alone():
    assert run_js("out = m.widgetStates(m.readTable(data), [{name: 'steps', value: 5}, {name: 'cfg', value: 1}])",
                  json.loads(TABLE.read_text())) is None


def test_options_settings_greyed_only_when_every_reached_sampler_decides_them(sampler):
    decided = set(sampler.OPTIONS_DECIDED)
    named = [p for p in sampler.PRESET_CHOICES if p not in ("model default", "custom")]
    cases = [[], ["custom"], ["model default"], named, named + ["custom"], [named[0], "model default"]]
    got = run_js("const t = m.readTable(data.table);"
                 "out = data.cases.map((presets) => m.optionStates(t, 'EMOSamplerOptions', presets));",
                 {"table": json.loads(TABLE.read_text()), "cases": cases})
    for presets, states in zip(cases, got):
        assert set(states) == decided
        greyed = {w for w, off in states.items() if off}
        assert greyed == (decided if presets and all(p in named for p in presets) else set()), presets


GRAPH = """
// A graph as the frontend holds it: nodes with widgets and getOutputNodes(slot); the options node reaches
// the sampler through an EMO Family Options node.
const widget = (name, value) => ({ name, value, disabled: false });
const sampler = { type: 'EMOSampler', comfyClass: 'EMOSampler', outputs: [{}],
  widgets: [widget('seed', 7), widget('steps', 25), widget('cfg', 4.5), widget('preset', data.preset),
            widget('scheduler', 'unipc')], getOutputNodes: () => null };
const family = { type: 'EMOFamilyOptions', comfyClass: 'EMOFamilyOptions', outputs: [{}],
  widgets: [widget('head_speed', 0.05)], getOutputNodes: () => [sampler] };
const options = { type: 'EMOSamplerOptions', comfyClass: 'EMOSamplerOptions', outputs: [{}],
  widgets: [widget('guidance_end', 0.5), widget('cache_interval', 2), widget('decode_chunk', 4)],
  getOutputNodes: () => [family] };
const graph = { _nodes: [options, family, sampler] };
const t = m.readTable(data.table);
const seen = (n) => Object.fromEntries(n.widgets.map((w) => [w.name, [w.value, w.disabled]]));
"""


@pytest.mark.parametrize("preset", ["balanced", "model default", "custom"])
def test_applying_to_a_graph_greys_and_keeps_every_value(sampler, preset):
    out = run_js(GRAPH + "const changed = m.applyToGraph(t, graph);"
                 "const first = [seen(options), seen(family), seen(sampler)];"
                 "sampler.widgets.find((w) => w.name === 'preset').value = 'custom';"
                 "const again = m.applyToGraph(t, graph);"
                 "out = { changed, first, again, custom: [seen(options), seen(sampler)] };",
                 {"table": json.loads(TABLE.read_text()), "preset": preset})
    options, family, node = out["first"]
    values = {"seed": 7, "steps": 25, "cfg": 4.5, "preset": preset, "scheduler": "unipc"}
    assert {k: v for k, (v, _) in node.items()} == values  # disabling leaves every value as it was
    assert {k for k, (_, off) in node.items() if off} == set(sampler.PRESET_DECIDES[preset])
    assert {k: v for k, (v, _) in options.items()} == {"guidance_end": 0.5, "cache_interval": 2, "decode_chunk": 4}
    named = preset not in ("model default", "custom")
    assert {k for k, (_, off) in options.items() if off} == (set(sampler.OPTIONS_DECIDED) if named else set())
    assert not any(off for _, off in family.values())
    assert out["changed"] == (preset != "custom")
    # back to custom: every widget active again, values untouched
    assert out["again"] == (preset != "custom")
    assert not any(off for n in out["custom"] for _, off in n.values())
    assert out["custom"][1]["steps"] == [25, False]
