"""The command line's arguments: parsed (and --help given) without torch, diffusers or transformers; every option
of every command shows its default; the overview names every command."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from emo_pipeline.cli import COMMANDS
from emo_pipeline.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers")

# In a fresh interpreter: parse generate's arguments, print every command's --help, then say which heavy modules
# are loaded; finally resolve --device auto (which needs torch) and say it again, so the check is seen to see one.
CHILD = """
import contextlib, io, json, sys
from emo_pipeline.cli.output_checks import check_device
from emo_pipeline.cli.parser import build_parser
args = build_parser().parse_args(["generate", "--preset", "fast", "--steps", "3", "--dtype", "fp16"])
parser = build_parser()
with contextlib.redirect_stdout(io.StringIO()) as shown:
    for argv in [["--help"]] + [[name, "--help"] for name in parser._subparsers._group_actions[0].choices]:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pass
heavy = lambda: [name for name in {heavy} if name in sys.modules]
before = heavy()
check_device(args.device)
print(json.dumps({{"args": vars(args), "helps": shown.getvalue().count("usage:"), "before": before, "after": heavy()}}))
"""


def test_parsing_and_help_import_no_torch_diffusers_or_transformers():
    child = subprocess.run([sys.executable, "-c", CHILD.format(heavy=HEAVY)], cwd=ROOT, capture_output=True,
                           text=True, check=True)
    found = json.loads(child.stdout.strip().splitlines()[-1])
    assert found["args"]["preset"] == "fast" and found["args"]["steps"] == 3 and found["args"]["dtype"] == "fp16"
    assert found["args"]["device"] == "auto"  # resolved once a command runs (cli.main)
    assert found["helps"] == 1 + len(COMMANDS)
    assert found["before"] == []
    assert "torch" in found["after"]  # the same check sees torch once something imports it


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return parser._subparsers._group_actions[0].choices


def test_every_option_of_every_command_says_its_default():
    parser = build_parser()
    missing = []
    for name, command in _subcommands(parser).items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = formatter._expand_help(action)
            if action.required:
                continue  # nothing to default to
            if "default" not in text.lower() or "default: none" in text.lower():
                missing.append(f"{name} {action.option_strings[0]}: {text!r}")
    assert missing == []
    options = _subcommands(parser)["generate"].format_help().split("options:", 1)[1]
    assert "(default: outputs/emo.mp4)" in options
    low_vram = options.split("\n  --low-vram", 1)[1].split("\n  --", 1)[0]
    assert " ".join(low_vram.split()).endswith("(default: off)")  # a flag says it is off


def test_the_overview_names_every_command():
    overview = build_parser().format_help()
    description = build_parser().description
    assert set(COMMANDS) == set(_subcommands(build_parser()))  # every command has its module and function
    for name in COMMANDS:
        assert name in description and name in overview
    assert "batch" in description and "benchmark" in description


GROUPS = ("inputs", "model", "sampling", "speed and memory", "face crop and paste-back", "output",
          "resuming a stopped render")


def test_generate_help_groups_every_option():
    generate = _subcommands(build_parser())["generate"]
    groups = {group.title: [a.dest for a in group._group_actions] for group in generate._action_groups}
    assert tuple(title for title in groups if title not in ("positional arguments", "options")) == GROUPS
    assert groups["options"] == ["help"]  # nothing left ungrouped
    grouped = [dest for title in GROUPS for dest in groups[title]]
    assert sorted(grouped) == sorted(a.dest for a in generate._actions if a.dest != "help")  # each once
    text = generate.format_help()
    assert all(f"\n{title}:\n" in text for title in GROUPS)


def _table(help_text: str) -> dict[str, list[str]]:
    """The help's per-model table: model label → its cells."""
    lines = ("  model " + help_text.split("\n  model ", 1)[1]).splitlines()
    starts = [i for i in range(len(lines[0])) if lines[0][i] != " " and lines[0][i - 1] == " "]  # column starts
    bounds = list(zip(starts, starts[1:] + [None]))
    rows = [[line[a:b].strip() for a, b in bounds] for line in lines[1:] if line.strip()]
    return {row[0]: [cell.split()[0] for cell in row[1:]] for row in rows}  # "12 (window)": 12


def test_generate_help_gives_each_models_own_defaults_from_its_config():
    from emo_pipeline.config import PRESETS
    from emo_pipeline.io.loading import network_config
    from emo_pipeline.cli.parser import DEMO_MODEL

    table = _table(_subcommands(build_parser())["generate"].format_help())
    expected = {name: make() for name, make in PRESETS.items() if not name.startswith("tiny")}
    if DEMO_MODEL.is_file():
        expected["demo (default)"] = network_config(DEMO_MODEL)  # read by the loader, as a render reads it
    assert set(table) == set(expected)
    for name, config in expected.items():
        steps, cfg, scheduler, clip, motion, fps, size = table[name]
        assert (int(steps), float(cfg), int(clip), int(motion), float(fps)) == (
            config.steps, config.guidance_scale, config.frames_per_clip, config.motion_frames, config.fps), name
        assert size == f"{config.sample_size}²" and scheduler == ("flow_euler" if config.spec.noise == "flow"
                                                                   else "ddim"), name
    assert table["demo (default)"][0] != table["hallo"][0] or not DEMO_MODEL.is_file()  # the demo's own steps


def test_the_table_follows_the_configs(monkeypatch):
    from emo_pipeline.cli import model_defaults
    from emo_pipeline.config import hallo_config

    monkeypatch.setitem(model_defaults.PRESETS, "hallo", lambda: hallo_config().with_overrides(steps=17, fps=12.5))
    table = _table(_subcommands(build_parser())["generate"].format_help())
    assert table["hallo"][0] == "17" and table["hallo"][5] == "12.5" and table["hallo2"][0] != "17"
