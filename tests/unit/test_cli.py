"""Every bad input: a one-line error naming the problem, a non-zero exit, never a traceback."""

import pytest

from conftest import synthetic_rows, write_csv
from slmtune.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def files(tmp_path):
    good = write_csv(tmp_path / "good.csv", synthetic_rows(10))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 au lait,World\n".encode("latin-1"))
    return {
        "good": str(good),
        "missing": str(tmp_path / "nope.csv"),
        "wrong_columns": str(write_csv(tmp_path / "cols.csv", [("a", "b")], header=("body", "y"))),
        "empty_text": str(write_csv(tmp_path / "empty.csv", [("", "World"), ("x", "Sports")])),
        "unknown_label": str(write_csv(tmp_path / "unk.csv", [("x", "Weather")])),
        "latin": str(latin),
    }


@pytest.mark.parametrize("args, message", [
    (["--dataset", "{missing}"], "data file not found"),
    (["--dataset", "{wrong_columns}"], "missing column"),
    (["--dataset", "{empty_text}"], "empty text"),
    (["--dataset", "{good}", "--test-file", "{unknown_label}"], "outside the label set"),
    (["--dataset", "{latin}"], "not UTF-8"),
    (["--dataset", "{good}", "--model", "no-such-org/no-such-model-xyz"], "unknown model"),
    (["--dataset", "{good}", "--output-dir", "/proc/slmtune-run"], "cannot write the run folder"),
    (["--config", "{missing}"], "config file not found"),
    (["train.epochz=1"], "unknown config field"),
    (["--data-dir", "/no/such/folder"], "AG News data folder not found"),
])
def test_train_bad_input(capsys, files, tmp_path, args, message):
    argv = [a.format(**files) for a in args]
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
    code, out, _ = run_cli(capsys, "clean", "--text", "Deal worth  #36;5M &lt;b&gt;now&lt;/b&gt;")
    assert code == 0 and "before:" in out and "after:  Deal worth $5M now" in out
    src = write_csv(tmp_path / "in.csv", [("a  quot;b quot;", "x")])
    dest = tmp_path / "out.csv"
    code, out, _ = run_cli(capsys, "clean", "--input", str(src), "--output", str(dest))
    assert code == 0 and '"a ""b"""' in dest.read_text()


def test_clean_needs_input(capsys):
    code, _, err = run_cli(capsys, "clean")
    assert code == 2 and "give --text" in err


def test_method_flag_takes_its_own_defaults_over_another_methods_file():
    from slmtune.cli import method_defaults
    from slmtune.config import DEFAULT_LR, load_config

    lora_file = "configs/agnews-lora.yaml"  # sets learning_rate 1e-3 for LoRA
    extra = method_defaults(lora_file, "full", [])
    config = load_config(lora_file, extra + ["model.method=full"])
    assert (config.train.learning_rate, config.model.pooling) == (DEFAULT_LR["full"], "mean")
    mine = ["train.learning_rate=2e-5"]  # the user's own value still wins
    config = load_config(lora_file, method_defaults(lora_file, "full", mine) + ["model.method=full", *mine])
    assert (config.train.learning_rate, config.model.pooling) == (2e-5, "mean")
    assert method_defaults(lora_file, "lora", []) == [] and method_defaults(None, "full", []) == []
