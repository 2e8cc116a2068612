"""Helpers the tests import (``from helpers import ...``); fixtures live in conftest.py."""
from __future__ import annotations

import argparse


def run_data_cli(argv):
    """Run a data command the way ``mmdrfuse`` does, but let its DataError propagate to the test."""
    from mmdrfuse.config import run_command
    from mmdrfuse.data import cli as data_cli

    parser = argparse.ArgumentParser(prog="mmdrfuse")
    data_cli.register(parser.add_subparsers(dest="command"))
    return run_command(parser.parse_args(argv))
