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
