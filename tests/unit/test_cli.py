"""Every bad input: a one-line error naming the problem, a non-zero exit, never a traceback."""

import pytest

from conftest import synthetic_rows, write_csv
from slmtune.cli import build_parser, main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def files(tmp_path):
    good = write_csv(tmp_path / "good.csv", synthetic_rows(10))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 au lait,World\n".encode("latin-1"))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("label,text\nSports,match goal\nBusiness\nWorld,election\n")
    return {
        "good": str(good),
        "missing": str(tmp_path / "nope.csv"),
        "wrong_columns": str(write_csv(tmp_path / "cols.csv", [("a", "b")], header=("body", "y"))),
        "empty_text": str(write_csv(tmp_path / "empty.csv", [("", "World"), ("x", "Sports")])),
        "unknown_label": str(write_csv(tmp_path / "unk.csv", [("x", "Weather")])),
        "latin": str(latin),
        "ragged": str(ragged),
    }


@pytest.mark.parametrize("args, message", [
    (["--dataset", "{missing}"], "data file not found"),
    (["--dataset", "{wrong_columns}"], "missing column"),
    (["--dataset", "{empty_text}"], "empty text"),
    (["--dataset", "{good}", "--test-file", "{unknown_label}"], "never occur in the training rows"),
    (["--dataset", "{latin}"], "not UTF-8 text (byte 14, line 2)"),
    (["--dataset", "{ragged}"], "row 2 has 1 field(s) where the header has 2"),
    (["--config", "{folder}"], "is a folder; give a config file"),
    (["train.batch_size=2.5"], "train.batch_size expects a whole number, got 2.5"),
    (["train.epochs=.nan"], "train.epochs expects a number"),
    (["lora.r=[1,2]"], "lora.r expects a whole number"),
    (["train.precision=fp8"], "train.precision must be one of auto, fp32, bf16, got 'fp8'"),
    (["--dataset", "{good}", "--model", "no-such-org/no-such-model-xyz"], "unknown model"),
    (["--dataset", "{good}", "--output-dir", "/proc/slmtune-run"], "cannot write the run folder"),
    (["--config", "{missing}"], "config file not found"),
    (["train.epochz=1"], "unknown config field"),
    (["--data-dir", "/no/such/folder"], "AG News data folder not found"),
])
def test_train_bad_input(capsys, files, tmp_path, args, message):
    argv = [a.format(folder=str(tmp_path), **files) for a in args]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(tmp_path / "run")]
    code, _, err = run_cli(capsys, "train", *argv, "data.val_size=8", "data.train_size=16")
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "--text", "hello"], ["export", "OUT"]])
def test_not_a_run_folder(capsys, tmp_path, command):
    argv = [command[0], str(tmp_path), *[str(tmp_path / a) if a == "OUT" else a for a in command[1:]]]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "not a slmtune run folder" in err


def test_missing_run_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nope"))
    assert code == 2 and "run folder not found" in err


def test_clean_previews_before_and_after(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "clean", "--rules", "agnews", "--text", "Deal worth  #36;5M &lt;b&gt;now&lt;/b&gt;")
    assert code == 0 and "before:" in out and "after:  Deal worth $5M now" in out
    src = write_csv(tmp_path / "in.csv", [("a  quot;b quot;", "x")])
    dest = tmp_path / "out.csv"
    code, out, _ = run_cli(capsys, "clean", "--rules", "agnews", "--input", str(src), "--output", str(dest))
    assert code == 0 and '"a ""b"""' in dest.read_text()


def test_clean_needs_input(capsys):
    code, _, err = run_cli(capsys, "clean")
    assert code == 2 and "give --text" in err


def test_method_flag_takes_its_own_defaults_over_another_methods_file():
    from slmtune.config import DEFAULT_LR, load_config

    lora_file = "configs/agnews-lora.yaml"  # sets learning_rate 1e-3 for LoRA
    config = load_config(lora_file, [], method="full")
    assert (config.train.learning_rate, config.model.pooling) == (DEFAULT_LR["full"], "mean")
    config = load_config(lora_file, ["train.learning_rate=2e-5"], method="full")  # the user's own value wins
    assert (config.train.learning_rate, config.model.pooling) == (2e-5, "mean")
    assert load_config(lora_file, [], method="lora").train.learning_rate == 1e-3
    assert load_config(None, [], method="full").train.learning_rate == DEFAULT_LR["full"]


def test_config_reference_is_current_and_documents_every_field(capsys):
    from pathlib import Path

    from slmtune.config import reference_markdown, reference_rows

    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert docs.read_text(encoding="utf-8") == reference_markdown(), \
        "docs/config.md is stale: slmtune config --markdown > docs/config.md"
    rows = reference_rows()
    assert all(help_text for _, _, help_text in rows), [k for k, _, h in rows if not h]
    code, out, _ = run_cli(capsys, "config", "train.precision")
    assert code == 0 and out.startswith("train.precision = auto\n") and "AVX512-BF16" in out


def test_version_env_and_usage_errors(capsys):
    import json

    import slmtune

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"slmtune {slmtune.__version__}"
    code, out, _ = run_cli(capsys, "env", "--json")
    env = json.loads(out)
    assert code == 0 and env["packages"]["torch"] and env["precision_auto"]["precision"] in ("fp32", "bf16")
    assert env["packaged_model"].startswith("found and verified")
    with pytest.raises(SystemExit) as stop:  # a wrong command line is not bad input: its own exit code
        main(["train", "--method", "nope"])
    assert stop.value.code == 64 and "usage error" in capsys.readouterr().err


def test_import_config_and_help_load_no_torch():
    import subprocess
    import sys

    code = ("import sys, slmtune.config, slmtune.cli; slmtune.cli.build_parser().format_help(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_every_command_help_formats():
    """argparse formats help text with %: a bare % in a flag's help breaks `--help` of its command."""
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "predict", "study"} <= set(commands)
    for name, sub in commands.items():
        assert sub.format_help(), name
    assert "20%" in commands["train"].format_help()


def test_the_readme_shows_the_summary_train_prints():
    """The README's sample of `slmtune train`'s last lines names the rows the command prints today, in order."""
    import re
    from pathlib import Path
    from types import SimpleNamespace

    from slmtune.config import load_config
    from slmtune.console import train_summary

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```\n(slmtune train: done\n.*?)```", readme, re.S).group(1)
    shown = [re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines()[1:] if line.strip()]
    scores = {"accuracy": 0.9, "macro_f1": 0.9, "n": 7600}
    result = SimpleNamespace(
        run_dir="runs/x", metrics={"test": scores, "validation": scores}, blend=None, advice=None,
        params={"trainable": 1, "total": 2, "percent": 50.0}, seconds={"train": 1, "eval": 1, "total": 2},
        baseline={"accuracy": 0.85, "macro_f1": 0.85, "model_minus_baseline": {"accuracy": 0.05, "macro_f1": 0.05}})
    printed = [re.split(r"\s{2,}", line.strip())[0] for line in train_summary(result, load_config(None)).splitlines()
               if line.startswith("  ")]
    assert shown == printed


@pytest.mark.parametrize("argv, field, expected", [
    (["sweep", "--space", "lr"], "race", True),
    (["sweep", "--space", "lr", "--exhaustive"], "race", False),
    (["seeds", "--seeds", "1,2,3,4"], "sequential", True),
    (["seeds", "--seeds", "1,2,3,4", "--exhaustive"], "sequential", False),
])
def test_exhaustive_flags_reach_the_study_config(monkeypatch, tmp_path, argv, field, expected):
    """`--exhaustive` turns racing (sweeps) and sequential stopping (seeds) off; without it they stay on."""
    from slmtune.experiments import workers

    seen = []
    monkeypatch.setattr(workers, "run_study", lambda module, cfg, *args, **kwargs: seen.append(cfg))
    assert main([*argv, "--study-dir", str(tmp_path / "s")]) == 0
    assert getattr(seen[0], field) is expected
