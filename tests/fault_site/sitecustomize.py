"""Arms `DATAFLEX_FAULT` (tests/fault_injection.py) in every Python process of a resume test's run, the
torchrun workers of `launcher.nproc_per_node=2` included: the `cli` fixture's `fault=` puts this folder first
on PYTHONPATH, and Python imports `sitecustomize` at start-up."""

import os
import sys

if os.environ.get("DATAFLEX_FAULT"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fault_injection import install_from_env

    install_from_env()
