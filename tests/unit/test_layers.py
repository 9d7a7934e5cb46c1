"""The house plan's layers, checked in a fresh interpreter: what a module may never pull in."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, never", [
    ("slmtune.serve.inference", ("slmtune.train", "slmtune.experiments", "slmtune.report", "slmtune.cli")),
    ("slmtune.serve.export", ("slmtune.train", "slmtune.experiments")),
    ("slmtune.runs", ("slmtune.models", "torch")),
    ("slmtune.train", ("slmtune.experiments", "slmtune.report", "slmtune.cli", "slmtune.commands")),
    ("slmtune.resolve", ("torch", "slmtune.train")),
    ("slmtune.config", ("torch",)),
    ("slmtune.commands", ("slmtune.cli", "torch")),
])
def test_a_layer_imports_nothing_above_it(module, never):
    code = (f"import sys, {module}; bad = [m for m in {never!r} if m in sys.modules]; "
            "assert not bad, f'imported {bad}'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
