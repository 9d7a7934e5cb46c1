"""Racing: a run paused at a rung and resumed ends exactly where an unraced run ends; a linear probe needs no
training; the paired test keeps statistical ties; `slmtune tune` end to end on a tiny model."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from packaging.version import Version
from safetensors.torch import load_file

from conftest import crashed, gated_env, started, tiny_overrides, wait_until
from slmtune import runs
from slmtune.config import from_dict
from slmtune.errors import SlmtuneError
from slmtune.train import VALIDATION_CURVE, VALIDATION_PREDICTIONS, train
from slmtune.trainer import PauseAt


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_paused_and_resumed_run_ends_where_an_unraced_run_ends(tiny_models, synthetic_files, tmp_path, method):
    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files,
                                   **{"model.method": method, "train.epochs": 3, "train.patience": 10,
                                      "train.learning_rate": 1e-2 if method == "lora" else 1e-3}))
    whole = train(cfg, run_dir=tmp_path / "whole", score_test=False)
    first = train(cfg, run_dir=tmp_path / "raced", score_test=False, pause=PauseAt(epoch=1))
    paused = runs.read_result(tmp_path / "raced")
    assert paused["status"] == "success" and paused["paused_at"] == pytest.approx(1.0)
    assert (tmp_path / "raced" / "checkpoints").is_dir()  # what it resumes from
    assert first.metrics["validation"]  # a usable model at the rung, scored on validation only
    assert not (tmp_path / "raced" / "predictions.csv").exists()  # test never looked at
    resumed = train(cfg, run_dir=tmp_path / "raced", score_test=False, resume=True)
    done = runs.read_result(tmp_path / "raced")
    assert "paused_at" not in done and not (tmp_path / "raced" / "checkpoints").exists()
    assert done["best"]["epochs_run"] == pytest.approx(3.0)
    name = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    a, b = load_file(tmp_path / "whole" / "model" / name), load_file(tmp_path / "raced" / "model" / name)
    assert a.keys() == b.keys()
    # Exact from transformers 5.24 (the version slmtune is developed on). On the declared floor, 5.3, full
    # fine-tuning resumes close but not exactly (largest weight gap 0.0065 after two resumed epochs, the first
    # resumed loss 1.369101 against 1.369023); the cause in the older Trainer's resume path is not found yet.
    exact = method == "lora" or Version(transformers.__version__) >= Version("5.24")
    rtol, atol, curve = (1e-5, 1e-6, 1e-4) if exact else (0.05, 0.02, 0.02)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)
    if exact:
        assert resumed.metrics["validation"]["accuracy"] == whole.metrics["validation"]["accuracy"]
    losses = [[r["loss"] for r in runs.MetricsLog(tmp_path / f / "metrics.jsonl").read() if "loss" in r]
              for f in ("whole", "raced")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=curve)  # the same curve, logged once
    curves = [[(r["epoch"], r["predicted"]) for r in map(json.loads, (tmp_path / f / VALIDATION_CURVE).read_text(
        ).splitlines())] for f in ("whole", "raced")]
    assert [e for e, _ in curves[0]] == [e for e, _ in curves[1]] == [1.0, 2.0, 3.0]  # each evaluation recorded once
    if exact:
        assert curves[0] == curves[1]


def test_a_run_records_each_evaluations_decisions_and_a_replay_reads_them_at_its_rungs(tiny_models,
                                                                                      synthetic_files, tmp_path):
    from slmtune.data import load_splits
    from slmtune.experiments.racing import rung_counts
    from slmtune.stats import metric_of_counts

    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 3, "train.patience": 10,
                                                                            "train.evals_per_epoch": 2}))
    train(cfg, run_dir=tmp_path / "run", score_test=False)
    gold = np.asarray(load_splits(cfg.data, cfg.seed).validation.labels)
    records = [json.loads(line) for line in (tmp_path / "run" / VALIDATION_CURVE).read_text().splitlines()]
    logged = [r for r in runs.MetricsLog(tmp_path / "run" / "metrics.jsonl").read() if "validation_accuracy" in r]
    assert [r["step"] for r in records] == [r["step"] for r in logged] and len(records) == 6
    for record, log in zip(records, logged):  # the decisions the Trainer scored, in the split's order
        assert np.mean(np.asarray(record["predicted"]) == gold) == pytest.approx(log["validation_accuracy"])
    for rung, counts in zip([1, 2, 3], rung_counts(tmp_path / "run", [1, 2, 3])):
        best = max([r for r in records if r["epoch"] <= rung], key=lambda r: r["select"])
        accuracy = metric_of_counts(counts.sum(axis=0, keepdims=True), "accuracy", len(counts))[0]
        assert accuracy == pytest.approx(np.mean(np.asarray(best["predicted"]) == gold))


def test_a_resume_cut_off_resumes_from_its_checkpoint_and_still_ends_where_an_unraced_run_ends(
        tiny_models, synthetic_files, tmp_path):
    from transformers import TrainerCallback

    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files,
                                   **{"train.epochs": 3, "train.patience": 10, "train.learning_rate": 1e-2}))
    whole = train(cfg, run_dir=tmp_path / "whole", score_test=False)
    train(cfg, run_dir=tmp_path / "raced", score_test=False, pause=PauseAt(epoch=1))
    seconds_before = runs.read_result(tmp_path / "raced")["seconds"]["total"]

    class StopInEpochTwo(TrainerCallback):  # a Ctrl-C half way through the resumed part
        def on_step_end(self, args, state, control, **kwargs):
            if state.epoch > 1.5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path / "raced", score_test=False, resume=True, callbacks=[StopInEpochTwo()])
    cut_off = runs.read_result(tmp_path / "raced")
    assert cut_off["status"] == "interrupted" and cut_off["resuming_from"] == pytest.approx(1.0)
    assert runs.paused_at(tmp_path / "raced") == pytest.approx(1.0) and runs.is_finished(tmp_path / "raced")
    assert not runs.is_complete(tmp_path / "raced")
    resumed = train(cfg, run_dir=tmp_path / "raced", score_test=False, resume=True)  # not from scratch
    done = runs.read_result(tmp_path / "raced")
    assert done["status"] == "success" and not {"resuming_from", "seconds_before", "paused_at"} & set(done)
    assert done["best"]["epochs_run"] == pytest.approx(3.0)
    assert done["seconds"]["total"] > seconds_before  # the part before the pause still counts
    a = load_file(tmp_path / "whole" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "raced" / "model" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert resumed.metrics["validation"]["accuracy"] == whole.metrics["validation"]["accuracy"]
    (tmp_path / "raced" / "checkpoints").mkdir()  # a finished run: nothing to resume, whatever lies there
    assert runs.paused_at(tmp_path / "raced") is None


def test_no_epochs_is_a_linear_probe_on_the_frozen_encoder(tiny_models, synthetic_files, tmp_path):
    cfg = from_dict(tiny_overrides(tiny_models["distilbert"], synthetic_files,
                                   **{"model.method": "full", "train.epochs": 0, "model.head_init": "auto"}))
    result = train(cfg, run_dir=tmp_path / "probe", score_test=False)
    saved = runs.read_result(tmp_path / "probe")
    assert saved["head_init"] == "probe" and saved["best"]["epochs_run"] == 0
    assert saved["resolved"]["model.head_init"]["reason"].startswith("train.epochs=0")
    assert (tmp_path / "probe" / VALIDATION_PREDICTIONS).is_file()
    assert result.metrics["validation"]["accuracy"] > 0.5  # the synthetic task is keyword-separable


def test_head_init_prompt_tunes_the_encoder_by_its_label_prompts_then_fits_a_probe(tiny_models, synthetic_files,
                                                                                   tmp_path):
    from slmtune.serve.inference import predict

    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files,
                                   **{"model.method": "full", "train.epochs": 0, "model.head_init": "prompt"}))
    result = train(cfg, run_dir=tmp_path / "prompt", score_test=False)
    saved = runs.read_result(tmp_path / "prompt")
    assert saved["head_init"] == "prompt" and saved["best"]["epochs_run"] == 0
    assert saved["resolved"]["model.head_init"]["value"] == "prompt"
    assert result.metrics["validation"]["accuracy"] > 0.5  # the synthetic task is keyword-separable
    weights = load_file(str(tmp_path / "prompt" / "model" / "model.safetensors"))
    start = load_file(str(Path(tiny_models["bert"]) / "model.safetensors"))
    name = next(k for k in start if k.endswith("encoder.layer.0.attention.self.query.weight"))
    tuned = next(k for k in weights if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not np.allclose(weights[tuned].float().numpy(), start[name].float().numpy())  # the encoder was tuned
    assert predict(tmp_path / "prompt", ["a text"])[0]["label"] in saved["label_names"]  # a stock run folder


@pytest.mark.parametrize("overrides, message", [
    ({"model.method": "lora", "model.head_init": "prompt"}, "use model.method=full"),
    ({"model.method": "full", "model.head_init": "prompt", "data.multi_label": True}, "single-label head"),
])
def test_head_init_prompt_refuses_what_it_cannot_serve(tiny_models, synthetic_files, overrides, message):
    with pytest.raises(SlmtuneError, match=message):
        from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **overrides))


def _counts(correct: list[int]) -> np.ndarray:
    from slmtune.stats import row_counts

    gold = np.zeros(len(correct), dtype=int)
    return row_counts(gold, 1 - np.asarray(correct), 2)


def test_a_candidate_is_cut_only_when_the_paired_test_says_it_is_behind():
    from slmtune.experiments.racing import standing

    rng = np.random.default_rng(0)
    leader = (rng.random(400) < 0.9).astype(int)
    close = leader.copy()
    close[:4] = 1 - close[:4]  # four rows apart: a statistical tie
    far = (rng.random(400) < 0.6).astype(int)
    board = standing({"leader": _counts(leader), "close": _counts(close), "far": _counts(far)}, "accuracy")
    assert board.leader in ("leader", "close")
    assert board.behind == ["far"] and set(board.tied) == {"leader", "close"}
    low, high = board.scores["far"].low, board.scores["far"].high
    assert low < far.mean() < high


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "micro_f1"])
def test_bootstrap_metrics_match_scikit_learn(metric):
    from sklearn.metrics import accuracy_score, f1_score

    from slmtune.stats import metric_of_counts, row_counts

    rng = np.random.default_rng(1)
    gold, pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    pred[:150] = gold[:150]
    counts = row_counts(gold, pred, 4)
    ours = metric_of_counts(counts.sum(axis=0, keepdims=True), metric, len(counts))[0]
    theirs = accuracy_score(gold, pred) if metric == "accuracy" else f1_score(
        gold, pred, average=metric.split("_")[0], labels=range(4), zero_division=0)
    assert ours == pytest.approx(theirs)


def test_replaying_the_rules_on_full_curves_reports_the_regret():
    from slmtune.experiments.racing import replay, rungs_of

    assert rungs_of(3, 1.0) == [1.0, 2.0, 3] and rungs_of(6, 1.0) == [1.0, 2.0, 4.0, 6] and rungs_of(1, 1.0) == [1]
    rng = np.random.default_rng(2)
    good = [(rng.random(500) < p).astype(int) for p in (0.7, 0.8, 0.9)]
    fair = [(rng.random(500) < p).astype(int) for p in (0.65, 0.7, 0.75)]
    slow_starter = [(rng.random(500) < p).astype(int) for p in (0.3, 0.8, 0.95)]  # behind at first, best at the end
    bad = [(rng.random(500) < p).astype(int) for p in (0.3, 0.35, 0.4)]
    out = replay({n: [_counts(c) for c in curve] for n, curve in
                  (("good", good), ("fair", fair), ("slow", slow_starter), ("bad", bad))}, "accuracy")
    assert out["survivors"][0] == ["good", "fair"]  # the best half goes on by rank, the rest were behind
    assert out["exhaustive_best"] == "slow" and not out["exhaustive_best_kept"]  # what early cuts can lose
    assert out["racing_best"] == "good" and out["regret"] > 0
    assert "bad" not in out["survivors"][-1]


def _tune_base(tiny_models, synthetic_files):
    return from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"data.train_size": None,
                                                                             "data.val_size": 40}))


def test_tune_starts_fine_tuning_heads_as_a_probe_unless_the_user_chose(tiny_models, synthetic_files):
    from slmtune.config import replace
    from slmtune.experiments import tune

    chosen = _tune_base(tiny_models, synthetic_files)  # head_init=random, set
    auto = replace(chosen, **{"model.head_init": "auto"})
    for method in ("lora", "full"):
        assert tune._config(auto, "m", method, 1e-3, None).model.head_init == "probe"
        assert tune._config(chosen, "m", method, 1e-3, None).model.head_init == "random"
    multi = replace(auto, **{"data.multi_label": True})  # no probe head for label sets: auto decides
    assert tune._config(multi, "m", "lora", 1e-3, None).model.head_init == "auto"


def test_the_prompt_model_joins_the_portfolio_only_where_classes_have_few_rows(tiny_models, synthetic_files,
                                                                              tmp_path):
    from slmtune.config import replace
    from slmtune.data import load_splits
    from slmtune.experiments import tune

    base = _tune_base(tiny_models, synthetic_files)
    splits = load_splits(base.data, base.seed)
    few = tune.PROMPT_ROWS_PER_CLASS * len(splits.label_names)
    for rows, multi_label, cfg, wanted in ((few, False, tune.TuneConfig(), True),
                                           (few + 1, False, tune.TuneConfig(), False),
                                           (few, True, tune.TuneConfig(), False),
                                           (few, False, tune.TuneConfig(prompt=False), False)):
        search = tune.Search(tmp_path, "accuracy", multi_label, splits.label_names)
        tune._portfolio(search, cfg, ["m"], base, splits, rows)
        assert ("prompt-m" in search.candidates) is wanted, (rows, multi_label, cfg.prompt)
    search = tune.Search(tmp_path, "accuracy", False, splits.label_names)
    tune._portfolio(search, tune.TuneConfig(), ["m"], base, splits, len(splits.train))
    prompt = search.candidates["prompt-m"]
    search.speed["m"] = 1e4  # texts a second: its 15 passes are seconds
    assert tune._prompt_fits(search, prompt, splits, base, 600.0, print) and prompt.status == "waiting"
    search.speed["m"] = 5.0  # minutes: more than the race's share of a 10-minute budget: it waits for what the
    assert not tune._prompt_fits(search, prompt, splits, base, 600.0, print)  # race leaves
    assert prompt.status == "waiting" and "after the race" in prompt.note
    config = tune._config(base, "m", "full", None, 0.0, head="prompt")  # what its run trains: a user's head aside
    assert (config.model.method, config.train.epochs, config.model.head_init) == ("full", 0.0, "prompt")
    assert tune._config(replace(base, **{"model.head_init": "auto"}), "m", "lora", 1e-3, None).model.head_init == (
        "probe")


def test_tune_leaves_a_best_run_folder_a_leaderboard_and_a_test_comparison(tiny_models, synthetic_files, tmp_path,
                                                                           monkeypatch):
    from slmtune.experiments import tune
    from slmtune.serve.inference import predict

    cfg = tune.TuneConfig(time="5m", lora_rates=[1e-2, 1e-4], full_rates=[1e-3])
    calls = []
    real_step = tune._step

    def step(search, cand, *args, **kwargs):
        calls.append(cand.name)
        if cand.name == "full-bert-lr0.001" and not (tmp_path / "stopped").exists():
            (tmp_path / "stopped").touch()
            raise KeyboardInterrupt  # Ctrl-C in the middle of the race
        return real_step(search, cand, *args, **kwargs)

    monkeypatch.setattr(tune, "_step", step)
    with pytest.raises(KeyboardInterrupt):
        tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "search")
    assert (tmp_path / "search" / "best" / "model").is_dir()  # a usable best-so-far
    assert predict(tmp_path / "search" / "best", ["a text"])[0]["label"]
    trained_before = {c for c in calls if c != "full-bert-lr0.001"}
    calls.clear()
    summary = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "search")
    assert {"probe-bert", "lora-bert-lr0.01"} <= trained_before
    folder = tmp_path / "search"
    board = list(csv.DictReader((folder / "leaderboard.csv").open()))
    assert {r["candidate"] for r in board} == {"tfidf", "probe-bert", "prompt-bert", "lora-bert-lr0.01",
                                               "lora-bert-lr0.0001", "full-bert-lr0.001", "blend"}
    assert all(r["validation"] for r in board) and board[0]["tied_with_best"] == "1"
    chosen = json.loads((folder / "tune.json").read_text())["cross_fit"]  # 40 validation rows: cross-fitted
    assert summary["best"] == (chosen["leader"] if chosen and board[0]["candidate"] in chosen["scores"]
                               else board[0]["candidate"])
    best = runs.read_result(folder / "best")
    assert best["status"] == "success" and best["metrics"]["test"]["accuracy"] > 0.25
    assert (folder / "best" / "predictions.csv").is_file()
    test = summary["test"]
    assert {"best", "tfidf", "best_minus_tfidf", "mcnemar"} <= set(test)
    assert test["best"]["accuracy"]["low"] <= test["best"]["accuracy"]["value"] <= test["best"]["accuracy"]["high"]
    assert summary["seconds"] < 300 * 1.1
    assert not list(folder.glob("candidates/*/checkpoints")) or any(
        r["status"] == "racing" for r in board)  # checkpoints stay only for candidates that can still go on


def test_where_validation_rows_are_few_the_tied_candidates_are_chosen_on_both_folds(tiny_models, synthetic_files,
                                                                                   tmp_path):
    from slmtune.experiments import tune
    from slmtune.experiments.tune_board import validation_probs

    cfg = tune.TuneConfig(time="5m", lora_rates=[1e-2, 1e-4], full_rates=[], prompt=False, blend=False,
                          alpha=1e-9)  # nothing is significantly behind: every candidate is tied with the best
    folder = tmp_path / "search"
    summary = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, folder)
    state = json.loads((folder / "tune.json").read_text())
    chosen, search = state["cross_fit"], tune.Search(folder, "accuracy", False, state["label_names"])
    tied = {"probe-bert", "lora-bert-lr0.01", "lora-bert-lr0.0001"}
    assert set(chosen["scores"]) == tied and chosen["rows"] == 120 + 40
    validation = pd.read_csv(folder / "candidates" / "probe-bert" / VALIDATION_PREDICTIONS, keep_default_na=False)
    for name in tied:  # each trained on the 40 validation rows and scored on the 120 training rows ...
        fold = folder / "cross-fit" / f"{name}-fold2"
        assert runs.read_result(fold)["sizes"]["train"] == 40
        train_rows = pd.read_csv(fold / VALIDATION_PREDICTIONS, keep_default_na=False)
        assert len(train_rows) == 120
        # ... and its score on every row is the two folds' predictions pooled
        probs = np.vstack([validation_probs(fold, search), validation_probs(folder / "candidates" / name, search)])
        gold = [state["label_names"].index(g) for g in [*train_rows["gold"], *validation["gold"]]]
        assert chosen["scores"][name]["value"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == gold)))
    board = list(csv.DictReader((folder / "leaderboard.csv").open()))
    leader = board[0]["candidate"]  # on validation alone; cross-fitting decides among the encoders tied with it
    assert summary["best"] == (chosen["leader"] if leader in tied else leader)
    assert all("both folds (160 rows)" in r["note"] for r in board if r["candidate"] in tied)
    trained = {n: (folder / "cross-fit" / f"{n}-fold2" / "result.json").stat().st_mtime_ns for n in tied}
    again = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, folder)  # settled: the folds are kept
    assert again["best"] == summary["best"] and [r["note"].count("both folds") for r in again["leaderboard"]
                                                 if r["candidate"] in tied] == [1, 1, 1] and trained == {
        n: (folder / "cross-fit" / f"{n}-fold2" / "result.json").stat().st_mtime_ns for n in tied}
    cfg.cross_fit = False
    alone = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "alone")
    assert not (tmp_path / "alone" / "cross-fit").exists() and alone["best"] == leader


def test_a_prompt_model_too_long_for_before_the_race_trains_with_the_time_the_race_leaves(tiny_models,
                                                                                        synthetic_files, tmp_path,
                                                                                        monkeypatch):
    from slmtune.experiments import tune

    monkeypatch.setattr(tune, "_prompt_seconds", lambda *args: 120.0)  # over 30% of 5 minutes, under what is left
    order, real_step = [], tune._step

    def step(search, cand, *args, **kwargs):
        order.append(cand.name)
        return real_step(search, cand, *args, **kwargs)

    monkeypatch.setattr(tune, "_step", step)
    cfg = tune.TuneConfig(time="5m", lora_rates=[1e-2], full_rates=[], probe=False, cross_fit=False)
    tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "search")
    state = {c["name"]: c for c in json.loads((tmp_path / "search" / "tune.json").read_text())["candidates"]}
    assert state["prompt-bert"]["status"] == "finished" and state["lora-bert-lr0.01"]["status"] == "finished"
    assert order.index("prompt-bert") > max(i for i, name in enumerate(order) if name.startswith("lora"))


def test_cross_fitting_overrules_validation_only_among_the_candidates_it_compared():
    from slmtune.experiments.racing import standing
    from slmtune.experiments.tune import Search
    from slmtune.experiments.tune_crossfit import preferred
    from slmtune.stats import row_counts

    gold = np.arange(40) % 2
    board = standing({"a": row_counts(gold, gold, 2), "b": row_counts(gold, 1 - gold, 2),
                      "tfidf": row_counts(gold, np.r_[gold[:20], 1 - gold[20:]], 2)}, "accuracy")
    search = Search(Path("."), "accuracy", False, ["x", "y"])
    assert preferred(search, board) == "a"  # not cross-fitted: the validation leader
    search.cross_fit = {"leader": "b", "scores": {"a": {}, "b": {}}}
    assert preferred(search, board) == "b"
    search.cross_fit = {"leader": "b", "scores": {"b": {}, "c": {}}}  # the leader was not among those compared
    assert preferred(search, board) == "a"


def test_time_the_race_leaves_trains_the_leader_again_on_more_rows(tiny_models, synthetic_files, tmp_path,
                                                                   monkeypatch):
    from slmtune.experiments import tune

    monkeypatch.setattr(tune, "ENCODER_SHARE", 1e-6)  # the encoders get the floor's sample: 8 rows a class
    cfg = tune.TuneConfig(time="5m", lora_rates=[1e-2, 1e-4], full_rates=[], probe=False, prompt=False)
    folder = tmp_path / "search"
    summary = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, folder)
    state = {c["name"]: c for c in json.loads((folder / "tune.json").read_text())["candidates"]}
    raced = [state["lora-bert-lr0.01"], state["lora-bert-lr0.0001"]]
    assert {c["rows"] for c in raced} == {tune.MIN_ROWS_PER_CLASS * 4}
    refits = [c for c in state.values() if c["refit_of"]]
    assert len(refits) == 1, state
    refit = refits[0]
    source = state[refit["refit_of"]]
    assert source in raced and source["status"] == "finished" and refit["status"] == "finished"
    assert (refit["kind"], refit["learning_rate"], refit["epochs"]) == (source["kind"], source["learning_rate"],
                                                                         source["epochs"])
    assert refit["rows"] == 120  # every training row: a tiny model trains them in seconds
    assert runs.read_result(folder / "candidates" / refit["name"])["sizes"]["train"] == 120
    board = {r["candidate"]: r for r in csv.DictReader((folder / "leaderboard.csv").open())}
    assert board[refit["name"]]["validation"] != "" and board[refit["name"]]["rows"] == "120"
    assert summary["best"] in board
    again = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, folder)  # settled: nothing trains twice
    assert [c["name"] for c in json.loads((folder / "tune.json").read_text())["candidates"] if c["refit_of"]] == [
        refit["name"]] and again["best"] == summary["best"]


@pytest.mark.slow  # worker processes: each imports torch and transformers
def test_workers_train_the_same_candidates_side_by_side_in_processes_of_their_own(tiny_models, synthetic_files,
                                                                                  tmp_path):
    from slmtune.experiments import tune

    cfg = tune.TuneConfig(time="5m", lora_rates=[1e-2, 1e-4], full_rates=[1e-3], probe=False, prompt=False)
    alone = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "alone")
    cfg.workers = 2
    side = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "side")
    raced = ["lora-bert-lr0.01", "lora-bert-lr0.0001", "full-bert-lr0.001"]
    for name in raced:  # trained by a worker process (its job file, its output in its log) ...
        assert (tmp_path / "side" / "logs" / f"{name}.job.json").is_file()
        assert not (tmp_path / "alone" / "logs" / f"{name}.job.json").exists()
        assert "epoch" in (tmp_path / "side" / "logs" / f"{name}.log").read_text()
        # ... into the same model: same threads, same seed, the same predictions at the rung it reached
        assert (tmp_path / "side" / "candidates" / name / VALIDATION_PREDICTIONS).read_text() == (
            tmp_path / "alone" / "candidates" / name / VALIDATION_PREDICTIONS).read_text()
    boards = [{r["candidate"]: (r["status"], r["epochs"], r["validation"]) for r in summary["leaderboard"]}
              for summary in (alone, side)]
    assert boards[0] == boards[1] and alone["best"] == side["best"]
    speeds = json.loads((tmp_path / "side" / "tune.json").read_text())["speed"]
    assert speeds[f"train:lora:{tiny_models['bert']}@2"] > 0  # measured in the workers, two sharing the machine


def test_a_search_with_a_storage_trains_its_rungs_through_the_queue(tiny_models, synthetic_files, tmp_path):
    import optuna

    from slmtune.experiments import tune
    from slmtune.experiments.tune_workers import QUEUE

    cfg = tune.TuneConfig(time="5m", lora_rates=[1e-2, 1e-4], full_rates=[], probe=False, prompt=False)
    alone = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "alone")
    cfg.storage = f"sqlite:///{tmp_path / 'queue.db'}"
    earlier = optuna.create_study(study_name=QUEUE, storage=cfg.storage)  # a job an earlier, stopped start left
    earlier.set_user_attr("session", "earlier")
    earlier.set_user_attr("job-left", {"name": "left", "config": {}, "folder": str(tmp_path / "left"), "rows": 1,
                                       "pause_epoch": None, "log": str(tmp_path / "left.log"), "resume": False,
                                       "stop_at": None, "session": "earlier"})
    earlier.enqueue_trial({}, user_attrs={"job": "left"})
    queued = tune.run_tune(_tune_base(tiny_models, synthetic_files), cfg, tmp_path / "queued")
    boards = [{r["candidate"]: (r["status"], r["epochs"], r["validation"]) for r in summary["leaderboard"]}
              for summary in (alone, queued)]
    assert boards[0] == boards[1] and alone["best"] == queued["best"]  # the same race, the same models
    queue = optuna.load_study(study_name=QUEUE, storage=cfg.storage)
    trials = queue.get_trials(deepcopy=False)
    assert trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    left = [t for t in trials if t.user_attrs["job"] == "left"]
    assert len(left) == 1 and "earlier start" in left[0].user_attrs["error"] and not (tmp_path / "left").exists()
    trials = [t for t in trials if t not in left]
    names = {queue.user_attrs[f"job-{t.user_attrs['job']}"]["name"] for t in trials}
    assert names == {"lora-bert-lr0.01", "lora-bert-lr0.0001"}  # every rung of both went through the queue
    assert queue.user_attrs["ended"] is True  # what tells the workers to exit


@pytest.mark.slow  # three processes: the search, a worker it starts, a worker started apart
def test_workers_on_other_machines_take_the_searchs_jobs_from_its_storage(tiny_models, synthetic_files, tmp_path):
    gate, folder = tmp_path / "gate", tmp_path / "search"
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    worker = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "tune", "--worker", "--storage", url,
                               "--output-dir", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=gated_env(gate))
    search = subprocess.Popen(
        [sys.executable, "-m", "slmtune.cli", "tune", "--dataset", synthetic_files["train"], "--test-file",
         synthetic_files["test"], "--output-dir", str(folder), "--lora-rates", "1e-2,1e-4", "--full-rates", "",
         "--time", "5m", "--storage", url, "--no-cross-fit", f"model.name={tiny_models['bert']}",
         "data.val_size=40", "train.threads=1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=gated_env(gate))
    try:  # both processes hold a job of the first rung at its first step: the worker took one from the queue
        wait_until(lambda: {n.split("-")[1] for n in started(gate)} >= {str(worker.pid), str(search.pid)}
                   or search.poll() is not None or worker.poll() is not None, what="the search and the worker training")
        if not {n.split("-")[1] for n in started(gate)} >= {str(worker.pid), str(search.pid)}:
            for proc in (search, worker):
                proc.terminate()
            raise AssertionError("\n".join(proc.communicate()[0].decode()[-2000:] for proc in (search, worker)))
        (gate / "go").touch()
        out = search.communicate(timeout=300)[0].decode()
        assert search.returncode == 0 and not crashed(out), out[-2000:]
        said = worker.communicate(timeout=120)[0].decode()  # it exits by itself once the search has ended
        assert worker.returncode == 0 and not crashed(said), said[-2000:]
    finally:  # no process outlives a failed test
        for proc in (search, worker):
            proc.kill()
    trained = int(said.rsplit("trained ", 1)[1].split()[0])
    assert trained >= 1, said[-2000:]
    state = {c["name"]: c for c in json.loads((folder / "tune.json").read_text())["candidates"]}
    assert {state[n]["status"] for n in ("lora-bert-lr0.01", "lora-bert-lr0.0001")} <= {"finished", "cut"}
    assert (folder / "best" / "model").is_dir() and (folder / "summary.json").is_file()
    assert not (folder / "cross-fit").exists()  # --no-cross-fit: validation alone chose


def _gone(pid: int) -> bool:
    """Whether process `pid` has ended (an orphan that ended may stay a zombie until its new parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.slow  # processes stopped by a signal while they train
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)  # SIGINT: as SIGTERM
def test_a_search_stopped_while_its_workers_train_stops_them_and_continues_later(tiny_models, synthetic_files,
                                                                                tmp_path, sig):
    """SIGTERM (or Ctrl-C, the same path): the search stops its workers. SIGKILL cannot be passed on: each
    orphaned worker stops at its next step. Either way each leaves its run folder as a stopped run, and the same
    command finishes."""
    from slmtune.cli import main

    gate, folder = tmp_path / "gate", tmp_path / "search"
    args = ["tune", "--dataset", synthetic_files["train"], "--test-file", synthetic_files["test"], "--output-dir",
            str(folder), "--lora-rates", "1e-2,1e-4", "--full-rates", "", "--workers", "2", "--time", "5m",
            f"model.name={tiny_models['bert']}", "data.val_size=40", "train.threads=1"]
    proc = subprocess.Popen([sys.executable, "-m", "slmtune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=gated_env(gate))
    wait_until(lambda: len(started(gate)) == 2 or proc.poll() is not None, what="two workers at their first step")
    assert len({name.split("-")[1] for name in started(gate)}) == 2, proc.communicate()[0].decode()[-2000:]
    workers = [int(name.split("-")[1]) for name in started(gate)]
    proc.send_signal(sig)  # to the search only: it stops its workers
    out = proc.communicate(timeout=120)[0].decode()
    if sig == signal.SIGKILL:
        (gate / "go").touch()  # the orphans take their next step
        wait_until(lambda: all(_gone(pid) for pid in workers), what="the orphaned workers to stop")
    else:
        assert proc.returncode == 130 and not crashed(out), out[-2000:]
    for name in ("lora-bert-lr0.01", "lora-bert-lr0.0001"):  # each worker left its run folder as a stopped run
        assert runs.read_result(folder / "candidates" / name)["status"] == "interrupted", out[-2000:]
    assert main(args) == 0  # the same command finishes the search
    state = {c["name"]: c for c in json.loads((folder / "tune.json").read_text())["candidates"]}
    assert {state[n]["status"] for n in ("lora-bert-lr0.01", "lora-bert-lr0.0001")} <= {"finished", "cut"}
    assert (folder / "best" / "model").is_dir() and (folder / "summary.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--time", "soon"], "--time takes a duration"),
    (["--time", "1s"], "too small for even the cheapest candidate"),
    (["--models", "/no/such/model"], "unknown model"),
    (["--lora-rates", "fast"], "--lora-rates takes learning rates"),
    (["--worker"], "give the search's --storage URL"),
])
def test_tune_bad_input_is_one_line(tiny_models, synthetic_files, tmp_path, capsys, argv, message):
    from slmtune.cli import main

    args = ["tune", "--dataset", synthetic_files["train"], "--test-file", synthetic_files["test"],
            "--output-dir", str(tmp_path / "search"), f"model.name={tiny_models['bert']}", *argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
