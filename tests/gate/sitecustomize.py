"""A gate for tests that must see two processes overlap, or stop one at a known point, without timing.

Loaded by every Python process whose PYTHONPATH holds this folder and whose environment names a gate folder in
SLMTUNE_TEST_GATE (conftest.gated_env): each run that process trains stops at its first training step, writes
`started-<pid>-<k>` (its k-th trained run, from 0) into the gate folder, and waits there until the test writes
`go` (every run may pass) or `go-<pid>-<k>` (that run may). A stop signal sent while it waits acts as in any
training step. Without SLMTUNE_TEST_GATE it does nothing.
"""

import os

if os.environ.get("SLMTUNE_TEST_GATE"):
    import pathlib
    import time

    _GATE = pathlib.Path(os.environ["SLMTUNE_TEST_GATE"])

    def _install() -> None:
        import importlib

        train = importlib.import_module("slmtune.trainer")

        step = train.BucketTrainer.compute_loss
        runs = [0]

        def gated(self, *args, **kwargs):
            if not getattr(self, "_slmtune_gate_passed", False):
                self._slmtune_gate_passed = True
                k = runs[0]
                runs[0] += 1
                (_GATE / f"started-{os.getpid()}-{k}").touch()
                while not ((_GATE / "go").exists() or (_GATE / f"go-{os.getpid()}-{k}").exists()):
                    time.sleep(0.01)  # waits on the test's file, not on time
            return step(self, *args, **kwargs)

        train.BucketTrainer.compute_loss = gated

    _install()
