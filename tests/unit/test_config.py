import re

import pytest

from slmtune.config import (
    DEFAULT_LR,
    DEFAULT_POOLING,
    RunConfig,
    dump_yaml,
    from_dict,
    load_config,
    parse_overrides,
    replace,
)
from slmtune.errors import SlmtuneError
from slmtune.resolve import DataFacts, resolve, resolve_epochs


def test_defaults_are_the_documented_recipe():
    cfg = load_config(None)  # `slmtune train` with no config: the AG News reference recipe
    assert (cfg.model.name, cfg.model.method, cfg.name) == ("minilm-l6", "lora", "agnews-lora")
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size) == (2400, 240, None)
    assert cfg.data.clean_rules == "agnews"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.1)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.patience, cfg.train.threshold) == (None, 16, 3, 0.001)
    assert resolve(cfg, DataFacts(2400, 4, imbalance=1.1)).epochs == 3  # AG News is balanced: 3 epochs
    assert cfg.train.learning_rate == DEFAULT_LR["lora"]
    assert cfg.model.pooling == DEFAULT_POOLING["lora"] == "cls"


def test_sizes_and_names_follow_the_dataset_not_ag_news():
    """Any other dataset: every training row, a share for validation, generic cleaning, named after the data."""
    cfg = load_config(None, ["data.dataset=tickets/train.csv", "model.method=full"])
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.clean_rules) == (None, None, "generic")
    assert cfg.name == "tickets-full" and load_config(None, ["data.dataset=imdb"]).name == "imdb-lora"
    assert load_config(None, ["data.dataset=ag_news", "data.train_size=100"]).data.val_size == 240
    assert load_config(None, method="full").name == "agnews-full"


def test_a_recipe_s_sizes_stay_with_its_dataset():
    """An AG News recipe pointed at another dataset (a file or a study's --dataset) leaves its reference sizes and
    epochs behind, so they follow the data; sizes given with the new dataset, or a study's own, apply."""
    from slmtune.experiments.common import load_run_config

    recipe = "configs/agnews-lora.yaml"
    assert load_config(recipe).data.train_size == 2400
    other = load_config(recipe, ["data.dataset=tickets/train.csv"])
    assert (other.data.train_size, other.data.val_size, other.model.method) == (None, None, "lora")
    assert load_config(recipe).train.epochs == 3 and other.train.epochs is None  # epochs follow the data too
    assert load_config(recipe, ["data.dataset=tickets/train.csv", "data.train_size=500"]).data.train_size == 500
    assert load_config(recipe, ["data.dataset=ag_news"]).data.train_size == 2400  # the same dataset: kept
    study = load_run_config(recipe, {"train": {"epochs": 1}}, ["data.dataset=tickets/train.csv"])
    assert (study.data.train_size, study.data.val_size, study.train.epochs) == (None, None, 1)


def test_configs_are_found_from_any_folder(tmp_path, monkeypatch):
    """`configs/...` names a shipped recipe from any working folder; a study file's recipe paths also resolve
    beside it (or a folder above it); a file in the working folder comes first."""
    from slmtune.experiments.common import load_study_config
    from slmtune.experiments.seeds import SeedsConfig

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "studies").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "recipes").mkdir()
    (project / "recipes" / "mine.yaml").write_text("train: {learning_rate: 2.0e-4}\n")
    (project / "studies" / "seeds.yaml").write_text(
        "study: seeds\nrecipe: recipes/mine.yaml\ncompare: configs/agnews-full.yaml\n")
    monkeypatch.chdir(elsewhere)
    assert load_config("configs/reference-lora.yaml").train.learning_rate == 5e-4  # the shipped recipe
    cfg = load_study_config(SeedsConfig, str(project / "studies" / "seeds.yaml"))
    assert load_config(cfg.recipe).train.learning_rate == 2e-4  # found beside the study file
    assert load_config(cfg.compare).model.method == "full"  # a shipped recipe named by a study file
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "reference-lora.yaml").write_text("train: {learning_rate: 1.0e-3}\n")
    assert load_config("configs/reference-lora.yaml").train.learning_rate == 1e-3  # the working folder's first
    with pytest.raises(SlmtuneError, match="config file not found: configs/nope.yaml"):
        load_config("configs/nope.yaml")


@pytest.mark.parametrize("overrides, check", [
    (["train.epochs=1"], lambda c: c.train.epochs == 1),
    (["lora.r=16", "lora.alpha=32"], lambda c: (c.lora.r, c.lora.alpha) == (16, 32)),
    (["model.method=full"], lambda c: c.train.learning_rate == DEFAULT_LR["full"]),
    (["model.method=full", "train.learning_rate=1e-4"], lambda c: c.train.learning_rate == 1e-4),
    (["model.method=full"], lambda c: c.model.pooling == DEFAULT_POOLING["full"] == "mean"),
    (["model.method=full", "model.pooling=cls"], lambda c: c.model.pooling == "cls"),
    (["data.test_size=null"], lambda c: c.data.test_size is None),
    (["lora.target_modules=[query,key,value]"], lambda c: c.lora.target_modules == ["query", "key", "value"]),
    (["seed=7", "name=x"], lambda c: (c.seed, c.name) == (7, "x")),
])
def test_overrides(overrides, check):
    assert check(load_config(None, overrides))


@pytest.mark.parametrize("overrides, message", [
    (["train.epoch=1"], "unknown config field train.'epoch'"),
    (["bogus=1"], "unknown config field 'bogus'"),
    (["model.method=qlora"], "model.method must be one of"),
    (["train.learning_rate=2"], "learning_rate"),
    (["lora.r=0"], "lora.r"),
    (["data.val_size=0"], "val_size"),
    (["train.metric=loss"], "train.metric"),
    (["noequals"], "is not key=value"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(SlmtuneError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "lora.r=4"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(SlmtuneError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(SlmtuneError, match="not valid YAML"):
        load_config(bad)


def test_replace_keeps_the_rest_and_reresolves_method_lr():
    cfg = load_config(None, ["train.epochs=2"])
    full = replace(cfg, **{"model.method": "full"})
    assert full.train.epochs == 2 and full.train.learning_rate == DEFAULT_LR["full"]
    assert full.model.pooling == "mean" and replace(full, **{"model.method": "lora"}).model.pooling == "cls"
    # the same method again keeps what was set (a study passing its method along keeps the user's choices)
    mean_lora = load_config(None, ["model.pooling=mean", "train.learning_rate=3e-4"])
    again = replace(mean_lora, **{"model.method": "lora", "seed": 7})
    assert (again.model.pooling, again.train.learning_rate, again.seed) == ("mean", 3e-4, 7)


def test_parse_overrides_nests():
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    assert from_dict({}).name == RunConfig().name


@pytest.mark.parametrize("recipe, key", [("configs/agnews-lora.yaml", "8e80196c5ce7"),
                                         ("configs/agnews-full.yaml", "a7774a628d3d"),
                                         ("configs/reference-lora.yaml", "9dc2183cba90")])
def test_run_keys_of_the_recipes_do_not_move(recipe, key):
    """Config fields added later (dataset splits, cleaning rules, truncation, class weights, the baseline) leave
    the keys of earlier runs alone, so finished runs of a study stay reused. Full fine-tuning with its word
    embeddings trained (the reference study's recipe) keeps the key it had before they were frozen by default."""
    from slmtune.experiments.common import run_key

    overrides = ["train.precision=fp32", "model.freeze_word_embeddings=false"]
    assert run_key(load_config(recipe, overrides)) == key
    frozen = run_key(load_config(recipe, ["train.precision=fp32"]))
    assert (frozen == key) == ("lora" in recipe)  # LoRA never trains them: the field leaves its key alone


def test_epochs_follow_the_data():
    """Null epochs: 3, but 6 for LoRA on imbalanced (over 3:1) or multi-label data; a number given is kept; AG News
    runs keep the key they had when the default was 3."""
    from slmtune.experiments.common import run_key

    def epochs(config, imbalance, multi_label):
        return resolve_epochs(config, DataFacts(1000, 4, imbalance, multi_label))[0]

    lora, full = load_config(None), load_config(None, method="full")
    assert epochs(lora, 3.0, False) == 3 and epochs(lora, 3.5, False) == 6 and epochs(lora, 1.0, True) == 6
    assert epochs(full, 116.0, False) == 3 and epochs(full, 1.0, True) == 3
    assert epochs(load_config(None, ["train.epochs=2"]), 50.0, True) == 2
    assert "imbalanced" in resolve(lora, DataFacts(1000, 4, 8.0)).reasons["train.epochs"]  # says why
    assert run_key(lora) == run_key(load_config(None, ["train.epochs=3"]))
    own = load_config(None, ["data.dataset=tickets.csv"])
    assert run_key(own) != run_key(load_config(None, ["data.dataset=tickets.csv", "train.epochs=3"]))
    with pytest.raises(SlmtuneError, match="train.epochs must be positive"):
        load_config(None, ["train.epochs=-1"])


@pytest.mark.parametrize("key", ["model.method", "model.pooling", "model.head_init", "model.blend", "data.truncation",
                                 "data.clean_rules", "data.augment_ops", "train.metric", "train.class_weight",
                                 "train.device", "train.precision"])
def test_every_choice_field_refuses_an_unknown_value_in_one_line(key):
    """Choice fields are `Literal` types, checked in one place (config.schema.check_choices)."""
    message = rf"^{re.escape(key)} must be one of [a-z0-9_+, ]+(or null)?, got 'nonsense'$"
    with pytest.raises(SlmtuneError, match=message):
        load_config(None, [f"{key}=nonsense"])
    assert load_config(None, ["model.blend=tfidf", "model.pooling=mean"]).model.blend == "tfidf"
