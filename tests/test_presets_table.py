"""web/emo_presets.json (the frontend's table of which sampler widgets each preset decides) is what
nodes/sampler.py states, and what the engine does: a widget a preset "decides" changes nothing that runs,
any other widget does. Run as a script to write the file: `python tests/test_presets_table.py`."""

import importlib
import json
import sys
import tempfile
from pathlib import Path

import pytest

import comfy_stubs

TABLE = comfy_stubs.ROOT / "web" / "emo_presets.json"
# Two values for each widget, both valid for every family (MEMO's flow sampler takes dpmpp_2m and unipc too).
VALUES = {"steps": (25, 33), "cfg": (2.7, 4.4), "scheduler": ("dpmpp_2m", "unipc")}
FAMILIES = ("hallo", "echomimic", "echomimic-acc", "memo", "emo", "joyhallo")


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    comfy_stubs.install(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("out"))
    return importlib.import_module(comfy_stubs.load_pack().__name__ + ".nodes.sampler")


def ran(sampler, config, preset: str, options: dict | None = None, **widgets) -> tuple:
    """What runs on `config` for these widget values: steps, cfg, scheduler, guidance interval, cache interval."""
    given = {name: first for name, (first, _) in VALUES.items()} | widgets
    o = sampler.sampling_options(config, 0, given["steps"], given["cfg"], preset, given["scheduler"], options)
    return o.steps, o.guidance_scale, o.scheduler, o.guidance_interval, o.cache_interval


def test_shipped_table_is_what_the_sampler_states(sampler):
    assert json.loads(TABLE.read_text()) == sampler.presets_table(), "write it: python tests/test_presets_table.py"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_decided_widget_changes_nothing_that_runs_and_any_other_does(sampler, family):
    from emo_pipeline.config import preset as config_preset

    config = config_preset(family)
    table = json.loads(TABLE.read_text())["presets"]
    assert list(table) == sampler.PRESET_CHOICES
    for preset, entry in table.items():
        base = ran(sampler, config, preset)
        for widget, (_, other) in VALUES.items():
            changed = ran(sampler, config, preset, **{widget: other}) != base
            assert changed == (widget not in entry["decides"]), (family, preset, widget)
        steps, cfg, scheduler = base[:3]
        runs = entry["runs"]  # what runs instead of a decided widget: the model's own or the preset's value
        own = {"steps": config.steps, "cfg": config.guidance_scale, "scheduler": None}
        for widget, value in zip(("steps", "cfg", "scheduler"), (steps, cfg, scheduler)):
            if widget in runs:
                assert value == (own[widget] if runs[widget] == "model" else runs[widget]), (family, preset, widget)
        windows = config.spec.sampling == "context_windows"  # its cache interval is always 1
        for setting, value in (("guidance_end", 0.5), ("cache_interval", 3)):
            if windows and setting == "cache_interval":
                continue
            changed = ran(sampler, config, preset, {setting: value}) != base
            assert changed == (setting not in entry["options_decides"].get("EMOSamplerOptions", [])), (preset, setting)


def test_tooltips_name_what_runs_instead(sampler):
    """The demo's own steps and cfg quoted in the widgets' tooltips are the ones in its file; each tooltip names
    the presets that ignore it."""
    from emo_pipeline.io.loading import network_config

    demo = network_config(comfy_stubs.ROOT / "models" / "demo" / "net.safetensors")
    assert sampler.DEMO_OWN == {"steps": demo.steps, "cfg": demo.guidance_scale}
    required = sampler.EMOSampler.INPUT_TYPES()["required"]
    for widget in ("steps", "cfg", "scheduler"):
        tooltip = required[widget][1]["tooltip"]
        for preset, decided in sampler.PRESET_DECIDES.items():
            assert (preset in tooltip.split("Used only with preset")[1].split(";")[0]) == (widget not in decided)
        assert f"{demo.steps} the demo" in required["steps"][1]["tooltip"]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as models, tempfile.TemporaryDirectory() as out:
        comfy_stubs.install(Path(models), Path(out))
        table = importlib.import_module(comfy_stubs.load_pack().__name__ + ".nodes.sampler").presets_table()
    TABLE.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {TABLE}", file=sys.stderr)
