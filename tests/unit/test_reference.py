"""The reference study (plan, sharing, --only, --budget, resume), the HTML report in headless Chromium, main.py."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import tiny_overrides
from slmtune.cli import main
from slmtune.errors import SlmtuneError
from slmtune.experiments.reference import (
    ReferenceConfig,
    exhaustive,
    fit_budget,
    make_plan,
    parse_budget,
    run_reference,
)

QUIET = {"progress": lambda *_: None}


@pytest.fixture(scope="module")
def recipes(tiny_models, synthetic_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1, "data.val_size": 12,
                                                                      "data.train_size": 48})
    lora, full = root / "lora.yaml", root / "full.yaml"
    lora.write_text(yaml.safe_dump(values))
    full.write_text(yaml.safe_dump({**values, "model": {**values["model"], "method": "full"},
                                    "train": {**values["train"], "learning_rate": 1e-3}}))
    return {"lora": str(lora), "full": str(full)}


def reference_config(recipes) -> ReferenceConfig:
    return ReferenceConfig(name="ref", recipe=recipes["lora"], parts={
        "train": {"recipes": [recipes["full"], recipes["lora"]]},
        "seeds": {"compare": recipes["full"], "seeds": [42, 7]},
        "sweep-lr": {"space": {"train.learning_rate": [0.01, 0.02]}},
    })


@pytest.fixture(scope="module")
def reference_study(recipes, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    (root / "calibration.json").write_text(json.dumps({"train": 56.0, "eval": 209.7, "speed_vs_reference": 1.0}))
    cfg = reference_config(recipes)
    plan = make_plan(cfg, root, None, 1.0)
    record = run_reference(cfg, root, only=["train"], **QUIET)  # an interrupted study: only its first part ran
    assert set(record["seconds"]) == {"train"}
    full = run_reference(cfg, root, **QUIET)
    return {"root": root, "plan": plan, "record": full, "cfg": cfg}


def test_plan_counts_shared_runs_once(reference_study):
    plan = reference_study["plan"]
    assert plan.parts["train"]["runs"] == 2
    assert plan.parts["seeds"]["runs"] == 2  # seed 42 of both recipes is the train part's runs
    assert plan.parts["sweep-lr"]["runs"] == 2 and plan.total_runs == plan.new_runs == 6
    assert plan.seconds > 0 and plan.disk_mb > 0


def test_default_reference_plan_shares_the_sweep_lines(ag_news_dir, tmp_path, monkeypatch):
    from slmtune.experiments.reference import load_reference_config

    monkeypatch.setenv("SLMTUNE_DATA_DIR", str(ag_news_dir))
    monkeypatch.chdir(tmp_path)  # any folder: the shipped study config and the recipes it names are found
    cfg = load_reference_config("configs/studies/reference.yaml")
    assert all(Path(r).is_file() for r in cfg.parts["train"]["recipes"] + [cfg.recipe, cfg.parts["seeds"]["compare"]])
    plan = make_plan(cfg, tmp_path, None, speed=1.0)  # 1.0: the reference CPU's measured rates
    sweeps = [plan.parts[n]["runs"] for n in ("sweep-lr", "sweep-wd", "sweep-grid")]
    assert sweeps == [5, 4, 16]  # the lr and wd lines lie inside the 5x5 grid: 25 runs in all
    assert plan.parts["seeds"]["runs"] == 4  # sequential: 3 seeds planned, seed 42 of both being the train part's
    assert plan.parts["scaling"]["runs"] == 10  # 6 sizes x 2 seeds, the 2,400-row runs being the seeds part's


def test_exhaustive_study_trains_every_point_and_seed_and_shares_the_adaptive_runs(
        ag_news_dir, reference_study, tmp_path, monkeypatch, capsys):
    from slmtune.experiments.reference import load_reference_config

    monkeypatch.setenv("SLMTUNE_DATA_DIR", str(ag_news_dir))
    monkeypatch.chdir(tmp_path)
    cfg = load_reference_config("configs/studies/reference.yaml")
    adaptive, full = make_plan(cfg, tmp_path, None, 1.0), make_plan(exhaustive(cfg), tmp_path, None, 1.0)
    assert full.parts["seeds"]["runs"] == 8 and adaptive.parts["seeds"]["runs"] == 4  # 5 seeds, not 3
    assert full.parts["sweep-grid"]["cfg"].race is False and adaptive.parts["sweep-grid"]["cfg"].race is True
    assert full.parts["sweep-grid"]["seconds"] > adaptive.parts["sweep-grid"]["seconds"]  # every point to the end
    assert full.parts["scaling"]["seconds"] == adaptive.parts["scaling"]["seconds"]  # no adaptive rule there
    (tmp_path / "calibration.json").write_text(json.dumps({"train": 56.0, "eval": 209.7, "speed_vs_reference": 1.0}))
    lines: list[str] = []
    record = run_reference(cfg, tmp_path, dry_run=True, progress=lines.append)  # the plan says its most, too
    assert record["estimate_seconds"] == round(adaptive.seconds)
    assert record["estimate_seconds_at_most"] == round(full.seconds) and "at most ~" in lines[0]
    # every run of the finished (adaptive) tiny study is reused by its exhaustive form: nothing left to train
    assert make_plan(exhaustive(reference_study["cfg"]), reference_study["root"], None, 1.0).new_runs == 0
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump({"study": "reference", "name": "ref", "recipe": reference_study["cfg"].recipe,
                                    "parts": reference_study["cfg"].parts}))
    capsys.readouterr()
    assert main(["study", str(path), "--study-dir", str(reference_study["root"]), "--dry-run"]) == 0
    assert "never by a sweep point the race cut" in capsys.readouterr().out  # the plan says who scores test
    assert main(["study", str(path), "--study-dir", str(reference_study["root"]), "--exhaustive", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 to train" in out and "the race cut" not in out


def test_a_point_paused_by_a_race_is_done_for_the_race_and_still_to_train_exhaustive(reference_study, tmp_path):
    root = tmp_path / "ref"
    shutil.copytree(reference_study["root"], root)
    run = next((root / "sweep-lr" / "runs").iterdir())
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "paused_at": 1}))  # as a race leaves a cut point
    cfg = reference_study["cfg"]
    assert make_plan(cfg, root, None, 1.0).new_runs == 0
    assert make_plan(exhaustive(cfg), root, None, 1.0).new_runs == 1  # an unraced sweep trains it to the end


def test_reference_study_runs_each_config_once_and_resumes(reference_study):
    root, record = reference_study["root"], reference_study["record"]
    assert record["parts"]["train"]["done"] == 2  # the second call found the first part finished
    assert record["new_runs"] == 4
    assert record["parts"]["sweep-lr"]["race"] is True and record["parts"]["seeds"]["sequential"] is True
    run_folders = [p for p in root.glob("*/runs/*") if (p / "result.json").is_file()]
    assert len(run_folders) == 6  # 2 train + 2 new seeds + 2 sweep points: nothing trained twice
    seeds = json.loads((root / "seeds" / "summary.json").read_text())
    assert sum(r["reused"] for r in seeds["rows"]) == 2
    again = make_plan(reference_study["cfg"], root, None, 1.0)
    assert again.new_runs == 0 and again.seconds < 60
    assert Path(record["report"]).is_file() and (root / "reference.json").is_file()
    first, second = record["segments"]  # the first call ran only the train part: a second segment resumed it
    assert set(first["seconds"]) == {"train"} and set(second["seconds"]) == set(record["parts"])
    assert second["adaptive"]["sweep-lr"] == {"race": True} and second["estimate_seconds"]["train"] == 0
    assert record["part_seconds"]["train"] == pytest.approx(first["seconds"]["train"] + second["seconds"]["train"])
    assert json.loads((root / "reference.json").read_text())["part_seconds"] == record["part_seconds"]


def test_plan_counts_kept_rows_as_done(recipes, tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"train": 56.0, "eval": 209.7, "speed_vs_reference": 1.0}))
    cfg = ReferenceConfig(name="ref", recipe=recipes["lora"], parts={
        "zeroshot": {"methods": ["untrained-head", "templates"]},
        "fewshot": {"shots": [2], "draws": 2, "methods": ["probe", "prompt"], "prompt_min_steps": 2}})
    plan = make_plan(cfg, tmp_path, None, 1.0)
    before, data = plan.parts, plan.sizes
    from slmtune.experiments.common import EVAL_RATE, REFERENCE_TOKENS

    one_pass = data.test / EVAL_RATE * data.tokens / REFERENCE_TOKENS  # the test rows, at their length
    assert before["zeroshot"]["seconds"] == pytest.approx(2 * one_pass)  # untrained head + embeddings
    assert before["fewshot"]["seconds"] > 3 * one_pass  # the probe's test embedding and two prompt draws
    run_reference(cfg, tmp_path, **QUIET)
    assert len(list((tmp_path / "fewshot" / "rows").glob("*.json"))) == 4
    after = make_plan(cfg, tmp_path, None, 1.0).parts  # every result is kept: nothing left to estimate
    assert after["zeroshot"]["seconds"] == 0 and after["fewshot"]["seconds"] == 0


def test_budget_drops_and_says_so(recipes, tmp_path):
    cfg = reference_config(recipes)
    cfg.parts["scaling"] = {"sizes": [8, 16, 32, 64], "seeds": [1, 2, 3]}
    plan = fit_budget(cfg, tmp_path, None, 1.0, parse_budget("1s"), None)
    assert "scaling: 2 seeds" in plan.dropped and plan.dropped[-1].startswith("still ~")
    assert plan.parts["scaling"]["cfg"].seeds == [1, 2]
    assert "scaling: sizes above 2,400 rows dropped" not in plan.dropped  # only what changed something is said
    assert "seeds: 3 seeds" not in plan.dropped  # the seeds part has 2 already
    assert parse_budget("2h") == 7200 and parse_budget("90m") == 5400 and parse_budget("300") == 300
    with pytest.raises(SlmtuneError, match="--budget takes"):
        parse_budget("soon")


def test_the_plan_follows_the_data_s_rows_and_text_length(recipes, tmp_path):
    """Runs that leave sizes to the data are estimated on its rows; time per text scales with its tokens."""
    from slmtune.config import load_config, replace
    from slmtune.experiments.common import PRIOR_SAMPLES_PER_SECOND, REFERENCE_TOKENS, DataSizes, run_seconds

    config = load_config(recipes["lora"], ["data.train_size=null", "data.val_size=null", "data.test_size=null"])
    rates = PRIOR_SAMPLES_PER_SECOND["lora"]
    short, long = DataSizes(1000, 100, 500), DataSizes(1000, 100, 500, tokens=2 * REFERENCE_TOKENS)
    evals = config.train.evals_per_epoch * config.train.epochs
    expected = 1000 * config.train.epochs / rates["train"] + (100 * evals + 500) / rates["eval"]
    assert run_seconds(config, rates, short) == pytest.approx(expected + 3.0)
    assert run_seconds(config, rates, long) == pytest.approx(2 * expected + 3.0)
    unset = replace(config, **{"train.epochs": None})  # null epochs: LoRA trains twice as long on imbalanced data
    skewed = DataSizes(1000, 100, 500, imbalance=5.0)
    assert run_seconds(unset, rates, skewed) - run_seconds(unset, rates, short) == pytest.approx(
        1000 * 3 / rates["train"] + 100 * 3 / rates["eval"])
    plan = make_plan(reference_config(recipes), tmp_path, None, 1.0)
    assert plan.sizes.classes == 4 and 0 < plan.sizes.tokens < 20  # the synthetic texts are a few words
    doubled = make_plan(reference_config(recipes), tmp_path, None, 1.0,
                        sizes=DataSizes(**{**vars(plan.sizes), "tokens": 2 * plan.sizes.tokens}))
    assert doubled.seconds - plan.seconds == pytest.approx(plan.seconds - 3.0 * plan.new_runs)  # 3 s: start-up


def test_training_and_inference_are_planned_at_their_own_speed(recipes, tmp_path):
    """A machine twice as fast at training only halves the training share of each run's estimate; a calibration
    kept from an earlier release is read from its measured samples/s against today's reference figures."""
    from slmtune.experiments.common import PRIOR_SAMPLES_PER_SECOND, run_seconds
    from slmtune.experiments.reference import CALIBRATION_REFERENCE, calibration_speed

    cfg = exhaustive(reference_config(recipes))  # every run planned whole (no racing share)
    plan = make_plan(cfg, tmp_path, None, 1.0)
    faster = make_plan(cfg, tmp_path, None, {"train": 2.0, "eval": 1.0}, sizes=plan.sizes)
    expected = 0.0
    for p in plan.parts.values():
        for config in p["new"]:
            rates = PRIOR_SAMPLES_PER_SECOND[config.model.method]
            doubled = {"train": 2 * rates["train"], "eval": rates["eval"]}
            expected += run_seconds(config, doubled, plan.sizes) - run_seconds(config, rates, plan.sizes)
    assert faster.seconds - plan.seconds == pytest.approx(expected) and expected < 0
    kept = {"train": 2 * CALIBRATION_REFERENCE["train"], "eval": CALIBRATION_REFERENCE["eval"] / 2,
            "speed_vs_reference": 9.9}  # written against other reference figures: its own ratio is stale
    assert calibration_speed(kept) == pytest.approx({"train": 2.0, "eval": 0.5})
    assert calibration_speed({"speed_vs_reference": 1.5}) == {"train": 1.5, "eval": 1.5}  # written by hand


def test_a_study_s_own_estimate_is_for_its_data(recipes, tmp_path):
    """What a study prints before its runs ("~N min if none is done yet") counts the data's rows, test rows and
    text length, not AG News' defaults; the data is read once for all the study's configs."""
    from slmtune.config import load_config, replace
    from slmtune.experiments.common import PRIOR_SAMPLES_PER_SECOND, DataSizes, Study, data_sizes, run_seconds

    config = load_config(recipes["lora"], ["data.train_size=null", "data.test_size=null"])
    study, sizes, rates = Study(tmp_path / "s"), data_sizes(config), PRIOR_SAMPLES_PER_SECOND["lora"]
    assert sizes.train < 200 and sizes.tokens < 20  # the synthetic data: short rows
    assert study.estimate_seconds(config) == pytest.approx(run_seconds(config, rates, sizes))
    assert study.estimate_seconds(config) < run_seconds(config, rates, DataSizes()) / 10  # AG News': far longer
    augmented = replace(config, **{"data.augment_ratio": 1.0, "data.train_size": 20})
    assert study.data_sizes(augmented) is study.data_sizes(config)  # same rows: not loaded again


def test_the_few_shot_and_zero_shot_plans_follow_the_class_count_and_test_rows(recipes):
    """k shots of 22 classes are 22k rows, not 4k; shots above the smallest class's rows are not planned (the run
    drops them too); prompt and probe evaluate the data's own test rows."""
    from slmtune.config import load_config
    from slmtune.experiments import fewshot, zeroshot
    from slmtune.experiments.common import DataSizes

    base = load_config(recipes["lora"])
    cfg = fewshot.FewShotConfig(shots=[1, 5, 40], draws=1, methods=["lora", "prompt"])
    four = DataSizes(1000, 100, 500, classes=4, smallest_class=200)
    many = DataSizes(1000, 100, 500, classes=22, smallest_class=30)
    runs4, runs22 = fewshot.plan(cfg, base, None, four, None)[0], fewshot.plan(cfg, base, None, many, None)[0]
    assert [c.data.shots_per_class for c in runs4] == [1, 5, 40]
    assert [c.data.shots_per_class for c in runs22] == [1, 5]  # 40 shots > the smallest class's 30 rows
    prompt = fewshot.FewShotConfig(shots=[1, 5], draws=1, methods=["prompt"])
    assert fewshot.plan(prompt, base, None, many, None)[1] > fewshot.plan(prompt, base, None, four, None)[1]
    assert zeroshot.plan(zeroshot.ZeroShotConfig(), base, None, DataSizes(test=2000), None)[1] == pytest.approx(
        zeroshot.plan(zeroshot.ZeroShotConfig(), base, None, DataSizes(test=1000), None)[1] * 2)


def test_study_dataset_flags_replace_the_recipe_s_data(synthetic_files, tmp_path, capsys):
    """`slmtune study --dataset F --test-file T` runs an AG News study on F: the plan loads F and sizes from it."""
    path = tmp_path / "s.yaml"
    path.write_text("study: reference\nrecipe: configs/agnews-lora.yaml\nparts: {seeds: {seeds: [1, 2]}}\n")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "calibration.json").write_text(json.dumps({"speed_vs_reference": 1.0}))
    code = main(["study", str(path), "--study-dir", str(tmp_path / "x"), "--dry-run",
                 "--dataset", synthetic_files["train"], "--test-file", synthetic_files["test"]])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0 and "2 training runs" in out, captured.err
    assert "data: 144 training rows" in out and "16 validation, 60 test, 4 classes" in out


def test_only_picks_parts_by_name_or_kind(recipes, tmp_path):
    cfg = reference_config(recipes)
    assert list(make_plan(cfg, tmp_path, None, 1.0, only=["sweep"]).parts) == ["sweep-lr"]
    assert list(make_plan(cfg, tmp_path, None, 1.0, only=["seeds", "train"]).parts) == ["train", "seeds"]
    with pytest.raises(SlmtuneError, match="matches no part"):
        make_plan(cfg, tmp_path, None, 1.0, only=["magic"])


@pytest.mark.parametrize("text, message", [
    ("study: reference\nparts: {warp: {}}\n", "unknown kind 'warp'"),
    ("study: reference\nparts: {seeds: {sedes: [1]}}\n", "unexpected keyword argument 'sedes'"),
    ("study: reference\nmodel: x\n", "unknown field(s) model"),
    ("study: sweep\n", "run it with `slmtune sweep`"),
])
def test_study_bad_config(text, message, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "calibration.json").write_text(json.dumps({"speed_vs_reference": 1.0}))
    code = main(["study", str(path), "--study-dir", str(tmp_path / "x"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- report


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render(page: Path, out: Path) -> tuple[str, str]:
    """DOM after scripts ran, and Chromium's log (console messages included)."""
    base = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", f"--user-data-dir={out / 'profile'}"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    shot = subprocess.run(base + ["--window-size=1280,2000", f"--screenshot={out / 'report.png'}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    return dom.stdout, dom.stderr + shot.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed (apt-get install chromium; "
                                               ".ci/run installs it)")
def test_report_renders_in_headless_chromium(reference_study, tmp_path):
    root = reference_study["root"]
    # text from the dataset must be escaped: plant markup in a prediction of one run
    run = next(p for p in (root / "train" / "runs").iterdir() if (p / "predictions.csv").is_file())
    with (run / "predictions.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    wrong = next(name[2:] for name in rows[0] if name.startswith("p_") and name[2:] != rows[0]["gold"])
    rows[0].update(predicted=wrong, correct="0", text="<script>console.error('injected')</script><b>bold</b>",
                   **{f"p_{wrong}": "0.999"})  # the most confident mistake, so the report shows it
    with (run / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["report", str(root)]) == 0
    page = root / "report.html"
    html = page.read_text()
    assert "<script>console.error" not in html and "&lt;script&gt;" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained
    dom, log = render(page, tmp_path)
    assert console_errors(log) == [], console_errors(log)
    assert dom.count("<img") >= 6 and dom.count("data:image/png;base64,") >= 6  # figures embedded
    for text in ("Key findings", "Seeds study", "Sweep study", "Train study", "Models over test metrics",
                 "Most confident mistakes"):
        assert text in dom, text
    assert dom.count("<table") >= 5
    assert (tmp_path / "report.png").stat().st_size > 20_000  # the screenshot
    shutil.copy(tmp_path / "report.png", root / "report.png")


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed")
def test_console_error_detection_works(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); undefinedCall();</script></body></html>")
    _, log = render(page, tmp_path)
    assert console_errors(log), "the check would not notice a broken page"


def test_report_of_a_single_run_and_bad_folders(reference_study, tmp_path, capsys):
    run = next((reference_study["root"] / "train" / "runs").iterdir())
    assert main(["report", str(run), "--output", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Per class (test)" in html and "confusion matrix" in html
    findings = (tmp_path / "findings.md").read_text()  # the key findings as Markdown, beside the page
    assert findings.splitlines()[2] == "| finding | value | n | interval / note |"
    assert "test accuracy (seed" in findings and "single run" in findings

    root = reference_study["root"]
    assert main(["report", str(root), "--output", str(tmp_path / "study.html")]) == 0
    table = (tmp_path / "findings.md").read_text()
    seeds = json.loads((root / "seeds" / "summary.json").read_text())
    for row in seeds["table"]:  # every number comes from the study's files
        assert f"| {row['model']} accuracy over seeds | {row['accuracy']} | {len(seeds['seeds'])} |" in table
    assert "&lt;" not in table and "&amp;" not in table  # plain text, not HTML

    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["report", str(run), "--output", "/proc/no-such/r.html"]) == 2  # unwritable: one line, exit 2
    assert "cannot write the report" in capsys.readouterr().err


def test_report_says_when_a_run_or_study_did_not_finish(reference_study, tmp_path):

    from slmtune import runs

    run = tmp_path / "run"
    shutil.copytree(next((reference_study["root"] / "train" / "runs").iterdir()), run)
    runs.write_json(run / "result.json", {**runs.read_result(run), "status": "interrupted"})
    assert main(["report", str(run)]) == 0
    assert "Incomplete:</b> this run did not finish (status interrupted)" in (run / "report.html").read_text()
    study = tmp_path / "study"
    shutil.copytree(reference_study["root"] / "seeds", study)
    stopped = next((study / "runs").iterdir())
    runs.write_json(stopped / "result.json", {**runs.read_result(stopped), "status": "interrupted"})
    assert main(["report", str(study)]) == 0
    assert "some runs did not finish (1 interrupted)" in (study / "findings.md").read_text()


def test_bad_budget_fails_before_the_calibration(recipes, tmp_path, capsys, monkeypatch):
    from slmtune.experiments import reference

    monkeypatch.setattr(reference, "calibrate", lambda *a, **k: pytest.fail("calibrated before checking --budget"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"study": "reference", "recipe": recipes["lora"], "parts": {"train": {}}}))
    assert main(["study", "--config", str(path), "--study-dir", str(tmp_path / "x"), "--budget", "abc"]) == 2
    assert "--budget takes a duration" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- main.py


def _main_py():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_main", Path(__file__).resolve().parents[2] / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, expected", [
    (["--mode", "train", "--seed", "7"], [["train", "--method", "full", "seed=7"],
                                          ["train", "--method", "lora", "seed=7"]]),
    (["--mode", "multi_seed", "--seeds", "42,123"], [["seeds", "--config", "configs/studies/seeds.yaml",
                                                      "--seeds", "42,123"]]),
    (["--mode", "multi_seed", "--num_runs", "3"], [["seeds", "--config", "configs/studies/seeds.yaml",
                                                    "--num-runs", "3"]]),
    (["--mode", "hyperparam", "--sweep_type", "combined"], [["sweep", "--config",
                                                             "configs/studies/sweep-grid.yaml"]]),
    (["--mode", "data_centric"], [["augment", "--config", "configs/studies/augmentation.yaml"],
                                  ["active", "--config", "configs/studies/active.yaml"]]),
])
def test_main_py_maps_reference_commands(argv, expected):
    from slmtune.config import find_config

    module = _main_py()
    assert module.commands(module.build_parser().parse_args(argv)) == expected
    for command in expected:  # every mapped command parses in slmtune
        from slmtune.cli import build_parser

        build_parser().parse_known_args(command)
        config = command[command.index("--config") + 1] if "--config" in command else None
        assert config is None or find_config(config).is_file()  # a shipped config


def test_main_py_clean_test_runs(capsys):
    assert _main_py().main(["--mode", "clean_test"]) == 0
    out = capsys.readouterr().out
    assert "$ slmtune clean" in out and 'as "bargain hunters" return' in out and "$1.2" in out


@pytest.mark.slow
def test_reference_study_with_two_workers_trains_each_run_once(reference_study, recipes, tmp_path):
    """`slmtune study --workers 2`: every planned run goes through the queue once, then the parts reuse them and
    the results equal the one-worker study's."""
    import os
    import sys

    cfg = reference_study["cfg"]
    study_file = tmp_path / "reference.yaml"
    study_file.write_text(yaml.safe_dump({"study": "reference", "name": "ref", "recipe": cfg.recipe,
                                          "parts": cfg.parts}))
    root = tmp_path / "ref"
    root.mkdir()
    shutil.copy(reference_study["root"] / "calibration.json", root / "calibration.json")
    done = subprocess.run([sys.executable, "-m", "slmtune.cli", "study", "--config", str(study_file), "--study-dir",
                           str(root), "--workers", "2"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "queue: 6 run(s) to train, 2 worker(s)" in done.stdout
    folders = [p for p in root.glob("*/runs/*") if (p / "result.json").is_file()]
    assert len(folders) == 6 and all(json.loads((p / "result.json").read_text())["status"] == "success"
                                     for p in folders)
    for folder in folders:  # trained once: one test line each
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        assert sum('"split": "test"' in line for line in lines) == 1, folder

    def accuracies(study_root):
        rows = json.loads((study_root / "seeds" / "summary.json").read_text())["rows"]
        return sorted((r["seed"], r["config"], r["test_accuracy"]) for r in rows)

    assert accuracies(root) == accuracies(reference_study["root"])


def test_calibration_measures_the_studys_own_model_and_rows(recipes, tiny_models, tmp_path, monkeypatch):
    """The plan's calibration trains and scores the study's own encoder on its own training rows (no AG News
    needed: none is reachable here), keeps what it measured in calibration.json, reuses it for the same model
    and measures again for another."""
    from slmtune.experiments.common import load_run_config
    from slmtune.experiments.reference import calibrate

    monkeypatch.delenv("SLMTUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = load_run_config(recipes["lora"], None, None)
    first = calibrate(tmp_path, base, progress=lambda *_: None)
    assert first["model"] == tiny_models["bert"] and first["train"] > 0 and first["eval"] > 0
    assert first["speed_vs_reference"] > 0 and json.loads((tmp_path / "calibration.json").read_text()) == first
    assert calibrate(tmp_path, base, progress=pytest.fail) == first  # cached: nothing measured again
    other = load_run_config(recipes["lora"], None, [f"model.name={tiny_models['distilbert']}"])
    assert calibrate(tmp_path, other, progress=lambda *_: None)["model"] == tiny_models["distilbert"]
