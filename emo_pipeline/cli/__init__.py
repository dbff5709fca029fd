"""The command line, `python -m emo_pipeline COMMAND` (see --help): one module per command, each imported
only when its command runs."""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from .stop import STOP, Terminated, on_signal

# command → (module of this package, function taking the parsed arguments and returning the exit status)
COMMANDS = {
    "download": ("download", "download_command"),
    "benchmark": ("benchmark", "benchmark_command"),
    "generate": ("generate", "generate"),
    "upscale": ("upscale", "upscale_command"),
    "batch": ("batch", "batch_command"),
    "inspect": ("checkpoints", "inspect_command"),
    "convert": ("checkpoints", "convert_command"),
    "train": ("training", "train_command"),
    "train-demo": ("training", "train_demo_command"),
    "evaluate-demo": ("training", "evaluate_demo_command"),
    "evaluate": ("evaluate", "evaluate_command"),
    "synthetic": ("training", "synthetic_command"),
}


def main(argv: list[str] | None = None) -> int:
    from ..io.disk import DiskFullError
    from .parser import build_parser

    args = build_parser().parse_args(argv)
    STOP["signal"] = None
    # a command sets torch's CPU threads (cpu_threads.py); a caller in the same process gets its own back
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        if getattr(args, "device", None) is not None:
            from .output_checks import check_device

            args.device = check_device(args.device)
        module, function = COMMANDS[args.command]
        return getattr(importlib.import_module(f".{module}", __name__), function)(args)
    except (ValueError, FileNotFoundError, DiskFullError) as err:
        print(f"error: {err.strerror if isinstance(err, DiskFullError) else err}", file=sys.stderr)
        return 2
    except Exception as err:
        from ..download import DownloadError

        if not isinstance(err, DownloadError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated) or STOP["signal"] == signal.SIGTERM
        print(f"\n{'terminated' if terminated else 'interrupted'}: no output written", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
