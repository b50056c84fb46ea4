"""``probex info``: versions and the compute device probex will use."""

from __future__ import annotations

import argparse
import platform


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print versions and the device in use")
    parser.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    import torch

    from probex import __version__
    from probex.experts.training import resolve_device

    device = resolve_device("auto")
    print(f"probex {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name})")
    print(f"torch CPU threads: {torch.get_num_threads()} (set with --threads or $PROBEX_THREADS)")
    return 0
