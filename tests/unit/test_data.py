import pytest

from conftest import synthetic_rows, write_csv
from slmtune.config import DataConfig
from slmtune.data import load_ag_news_csv, load_splits, load_table, per_class_indices, stratified_indices
from slmtune.errors import SlmtuneError


def _ag(tmp_path, lines, name="test.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


def test_ag_news_original_layout(tmp_path):
    path = _ag(tmp_path, ['"3","Stocks rise","Shares  #36;5 up"', '"1","Talks","Leaders met"'])
    data = load_ag_news_csv(path)
    assert data.labels == [2, 0]
    assert data.texts[0] == "Stocks rise Shares  #36;5 up"
    assert data.label_names == ["World", "Sports", "Business", "Sci/Tech"]


@pytest.mark.parametrize("lines, message", [
    (['"5","t","d"'], "outside 1-4"),
    (['"1","t"'], "expected 3 columns"),
    (['"Class Index","Title","Description"', '"1","t","d"'], "class index 1-4"),
    (['"1","",""'], "empty text"),
])
def test_ag_news_bad_files(tmp_path, lines, message):
    with pytest.raises(SlmtuneError, match=message):
        load_ag_news_csv(_ag(tmp_path, lines))


def test_bad_encoding_and_missing_file(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes('"1","caf\xe9","d"\n'.encode("latin-1"))
    with pytest.raises(SlmtuneError, match="not UTF-8"):
        load_ag_news_csv(path)
    with pytest.raises(SlmtuneError, match="not found"):
        load_ag_news_csv(tmp_path / "missing.csv")


def test_generic_table_string_and_integer_labels(tmp_path):
    strings = load_table(write_csv(tmp_path / "s.csv", [("good", "pos"), ("bad", "neg"), ("fine", "pos")]))
    assert strings.label_names == ["neg", "pos"] and strings.labels == [1, 0, 1]
    ints = load_table(write_csv(tmp_path / "i.csv", [("x", 2), ("y", 0)]))
    assert ints.label_names == ["0", "2"] and ints.labels == [1, 0]  # labels as written, not indexes
    ag = load_table(write_csv(tmp_path / "a.csv", [("x", 4), ("y", 1), ("z", 10), ("w", 2), ("v", 3)]))
    assert ag.label_names == ["1", "2", "3", "4", "10"] and ag.labels == [3, 0, 4, 1, 2]  # sorted as numbers
    test = load_table(write_csv(tmp_path / "t.csv", [("z", "neg")]), label_names=strings.label_names)
    assert test.labels == [0]


def test_generic_jsonl_and_parquet(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"body": ["a b", "c d"], "y": ["x", "z"]})
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        data = load_table(tmp_path / name, "body", "y")
        assert data.texts == ["a b", "c d"] and data.label_names == ["x", "z"]


@pytest.mark.parametrize("rows, kwargs, message", [
    ([("a", "pos")], {"text_column": "body"}, "missing column"),
    ([("", "pos")], {}, "empty text"),
    ([("a", "maybe")], {"label_names": ["neg", "pos"]}, "never occur in the training rows"),
    ([("a", "")], {}, "empty label"),
])
def test_generic_bad_input(tmp_path, rows, kwargs, message):
    with pytest.raises(SlmtuneError, match=message):
        load_table(write_csv(tmp_path / "bad.csv", rows), **kwargs)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(SlmtuneError, match="unsupported file type"):
        load_table(path)


def test_stratified_indices_keep_shares_and_are_seeded():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    picked = stratified_indices(labels, 20, seed=1)
    assert len(picked) == 20 and len(set(picked)) == 20
    counts = [sum(labels[i] == c for i in picked) for c in range(3)]
    assert counts == [12, 6, 2]
    assert picked == stratified_indices(labels, 20, seed=1)
    assert picked != stratified_indices(labels, 20, seed=2)


def test_per_class_exact_and_within_pool():
    labels = [i % 4 for i in range(100)]
    pool = list(range(50, 100))
    picked = per_class_indices(labels, 5, seed=3, pool=pool)
    assert sorted(labels[i] for i in picked) == sorted([0, 1, 2, 3] * 5)
    assert set(picked) <= set(pool)
    with pytest.raises(SlmtuneError, match="fewer than"):
        per_class_indices(labels, 30, seed=0, pool=pool)


def test_splits_are_disjoint_stratified_and_test_is_fixed(tmp_path):
    train = write_csv(tmp_path / "train.csv", synthetic_rows(50, seed=1))
    test = write_csv(tmp_path / "test.csv", synthetic_rows(20, seed=2))
    cfg = DataConfig(dataset=str(train), test_file=str(test), train_size=80, val_size=20, test_size=40)
    a, b = load_splits(cfg, seed=1), load_splits(cfg, seed=2)
    assert (len(a.train), len(a.validation), len(a.test)) == (80, 20, 40)
    assert not set(a.train.texts) & set(a.validation.texts) - {t for t in a.train.texts if a.train.texts.count(t) > 1}
    assert [a.train.labels.count(c) for c in range(4)] == [20] * 4
    assert a.test.texts == b.test.texts  # the test set never moves with the seed
    assert a.train.texts != b.train.texts
    with pytest.raises(SlmtuneError, match="exceeds"):
        load_splits(DataConfig(dataset=str(train), test_file=str(test), train_size=500, val_size=20), seed=0)


def test_real_ag_news_folder(ag_news_dir):
    splits = load_splits(DataConfig(data_dir=str(ag_news_dir), train_size=400, val_size=40), seed=42)
    assert len(splits.test) == 7600 and len(splits.train) == 400
    assert all(abs(splits.train.labels.count(c) - 100) <= 2 for c in range(4))  # the file's class shares
    assert not any("#36;" in t or "&lt;" in t for t in splits.test.texts)


def test_shots_per_class_is_exact_disjoint_and_reproducible(tmp_path):
    train = write_csv(tmp_path / "train.csv", synthetic_rows(50, seed=1))
    test = write_csv(tmp_path / "test.csv", synthetic_rows(20, seed=2))
    cfg = DataConfig(dataset=str(train), test_file=str(test), shots_per_class=3, val_size=20)
    a, b, c = load_splits(cfg, seed=5), load_splits(cfg, seed=5), load_splits(cfg, seed=6)
    assert [a.train.labels.count(k) for k in range(4)] == [3, 3, 3, 3]
    assert a.train.texts == b.train.texts and a.train.texts != c.train.texts
    texts = [t for t, _ in synthetic_rows(50, seed=1)]
    repeated = {t for t in texts if texts.count(t) > 1}
    assert not (set(a.train.texts) & set(a.validation.texts)) - repeated  # never a validation row
    assert len(a.test) == 80  # test is untouched


def test_sizes_follow_the_data_file(tmp_path):
    """No test file: a fixed stratified 20% is held out; validation 10% of the rest; training takes the remainder."""
    path = write_csv(tmp_path / "all.csv", synthetic_rows(50))  # 200 rows, 4 classes
    splits = load_splits(DataConfig(dataset=str(path)), seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (144, 16, 40)
    again = load_splits(DataConfig(dataset=str(path)), seed=2)
    assert again.test.texts == splits.test.texts and again.validation.texts != splits.validation.texts


def test_dataset_folder_uses_its_own_splits(tmp_path):
    folder = tmp_path / "tickets"
    folder.mkdir()
    write_csv(folder / "train.csv", synthetic_rows(10, seed=1))
    write_csv(folder / "dev.csv", synthetic_rows(3, seed=2))
    write_csv(folder / "test.csv", synthetic_rows(5, seed=3))
    splits = load_splits(DataConfig(dataset=str(folder)), seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (40, 12, 20)
    with pytest.raises(SlmtuneError, match="no train.csv"):
        load_splits(DataConfig(dataset=str(tmp_path)), seed=0)


@pytest.mark.parametrize("rows, message", [
    ([("a b", "pos")] * 6, "a classifier needs at least two classes"),
    ([("a b", "pos")] * 6 + [("c d", "neg")] * 6 + [("e f", "odd")], "'odd'|odd.*single row"),
])
def test_data_that_cannot_train_says_why(tmp_path, rows, message):
    with pytest.raises(SlmtuneError, match=message):
        load_splits(DataConfig(dataset=str(write_csv(tmp_path / "d.csv", rows))), seed=0)


def test_test_label_unseen_in_training_is_named(tmp_path):
    train = write_csv(tmp_path / "train.csv", synthetic_rows(5))
    test = write_csv(tmp_path / "test.csv", [("storm clouds gather", "Weather")])
    with pytest.raises(SlmtuneError, match="Weather never occur in the training rows"):
        load_splits(DataConfig(dataset=str(train), test_file=str(test)), seed=0)


def test_hub_dataset_path(monkeypatch):
    """A Hub id goes through datasets.load_dataset: ClassLabel names kept, its own splits used, a test split
    without labels (-1, as in GLUE) left out so that a test share is held out instead."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = synthetic_rows(10)
    texts = [t for t, _ in rows]
    labels = [i % 2 for i in range(len(rows))]
    loaded = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": texts, "label": labels}, features=features),
        "validation": datasets.Dataset.from_dict({"sentence": texts[:6], "label": labels[:6]}, features=features),
        "test": datasets.Dataset.from_dict({"sentence": texts[:4], "label": [-1] * 4}, features=features),
    })
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: calls.append((name, config)) or loaded)
    splits = load_splits(DataConfig(dataset="someone/reviews", dataset_config="en", text_column="sentence"), seed=0)
    assert calls == [("someone/reviews", "en")] and splits.label_names == ["negative", "positive"]
    assert len(splits.validation) == 6 and len(splits.test) == 8 and len(splits.train) == 32
    with pytest.raises(SlmtuneError, match="no split nope"):
        load_splits(DataConfig(dataset="someone/reviews", text_column="sentence", splits={"test": "nope"}), seed=0)


def test_hub_dataset_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SlmtuneError, match="could not load the dataset 'no-such-user/no-such-data'"):
        load_splits(DataConfig(dataset="no-such-user/no-such-data"), seed=0)


@pytest.mark.parametrize("side", ["head", "tail", "head+tail"])
def test_truncation_sides_keep_special_tokens_and_the_chosen_part(minilm_dir, side):
    from transformers import AutoTokenizer

    from slmtune.data.tokenize import count_truncated, encode

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    words = [f"w{i}" for i in range(200)]
    long_text, short_text = " ".join(words), "a short one"
    full = tokenizer(long_text)["input_ids"]
    ids = encode(tokenizer, [long_text, short_text], 20, cache=False, truncation=side)
    assert len(ids[0]) == 20 and ids[0][0] == full[0] and ids[0][-1] == full[-1]  # [CLS] ... [SEP]
    assert ids[1] == tokenizer(short_text)["input_ids"]
    body = full[1:-1]
    expected = {"head": body[:18], "tail": body[-18:], "head+tail": body[:4] + body[-14:]}[side]
    assert ids[0][1:-1] == expected
    assert count_truncated(tokenizer, [long_text, short_text], 20) == 1
