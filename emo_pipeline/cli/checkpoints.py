"""`inspect` and `convert`: what a checkpoint is and lacks, and any network as one safetensors file."""

from __future__ import annotations

import argparse
from pathlib import Path

from .model_folder import resolve_model
from .output_checks import check_output


def inspect_command(args: argparse.Namespace) -> int:
    from ..io.model_files import find_net
    from ..io.loading import describe_checkpoint

    # a model folder works too, and a model's name in the default model folder (`inspect hallo`)
    print(describe_checkpoint(find_net(Path(resolve_model(args.checkpoint)))))
    return 0


def convert_command(args: argparse.Namespace) -> int:
    from ..io.loading import PRECISIONS
    from ..io.model_files import find_net
    from ..config import preset
    from ..io.loading import convert_checkpoint, describe_checkpoint

    if Path(args.target).suffix != ".safetensors":
        raise ValueError(f"convert writes a .safetensors file: name the target like "
                         f"{Path(args.target).with_suffix('.safetensors').name}, not {Path(args.target).name}.")
    check_output(args.target, "convert's target")
    source = find_net(Path(resolve_model(args.source)))
    print(f"Converting {source} ...")
    config = preset(args.preset) if args.preset else None
    path = convert_checkpoint(source, args.target, PRECISIONS[args.dtype] if args.dtype else None, config)
    print(describe_checkpoint(path))
    return 0
