"""The study protocol and how a study executes: every registered study implements the protocol, a module that
does not is named, budget reductions keep their order, and worker settings never leak into the process."""

import os
import types

import pytest

from slmtune.experiments.protocol import MEMBERS, check_protocol
from slmtune.experiments.registry import STUDIES
from slmtune.experiments.workers import Execution


@pytest.mark.parametrize("kind", sorted(STUDIES))
def test_every_registered_study_implements_the_protocol(kind):
    module = STUDIES[kind].load()
    assert all(hasattr(module, name) for name in MEMBERS)
    assert isinstance(module.figure_caption({"rows": [{"n": 3}], "seeds": [1, 2]}), str)
    assert module.OWN_QUEUE is (kind == "sweep")


def test_a_module_missing_a_member_is_named():
    partial = types.ModuleType("slmtune.experiments.half")
    partial.CONFIG, partial.run = object, print
    with pytest.raises(TypeError, match="half does not implement the study protocol: no OWN_QUEUE, REDUCTIONS"):
        check_protocol(partial)


def test_budget_reductions_come_cheapest_loss_first():
    from slmtune.experiments.reference import reductions

    order = [(kind, r.field) for kind, r in reductions()]
    assert order == [("scaling", "sizes"), ("fewshot", "draws"), ("active", "seeds"), ("augmentation", "seeds"),
                     ("scaling", "seeds"), ("augmentation", "ratios"), ("sweep", "space"), ("seeds", "seeds"),
                     ("fewshot", "shots")]


def test_an_execution_names_its_workers_and_restores_the_thread_budget(monkeypatch):
    import torch

    from slmtune.trainer import set_threads, thread_budget

    execution = Execution(workers=2, argv=("seeds", "--workers", "2", "--seeds", "1,2"))
    assert execution.worker_command()[-4:] == ["seeds", "--seeds", "1,2", "--worker"]
    assert Execution(argv=("sweep", "--workers=3")).worker_command()[-2:] == ["sweep", "--worker"]
    assert execution.queued and not Execution().queued and Execution(storage="sqlite:///q.db").queued
    with pytest.raises(Exception, match="--workers must be at least 1"):
        Execution(workers=0)
    monkeypatch.delenv("SLMTUNE_THREADS", raising=False)

    with thread_budget(1):
        set_threads(None)
        assert torch.get_num_threads() == 1
    set_threads(None)  # outside the budget: every core again, and nothing left in the environment
    assert torch.get_num_threads() == (os.cpu_count() or 1) and "SLMTUNE_THREADS" not in os.environ
