import numpy as np
import pytest
from sklearn.metrics import f1_score

from slmtune.data.tokenize import pad_batch, sorted_batches
from slmtune.serve.metrics import classification_metrics, compute_metrics
from slmtune.trainer import LengthBucketSampler


def test_bucket_sampler_covers_everything_and_pads_little():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 120, size=203).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=1)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(203)) and first != second
    batches = [first[i:i + 16] for i in range(0, 203, 16)]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.1 * sum(lengths)  # random batches would pad roughly 1.6x
    assert len(batches[-1]) == 203 % 16  # the partial batch comes last
    sampler.set_epoch(0)
    again = LengthBucketSampler(lengths, batch_size=16, seed=1)
    assert list(again) == list(sampler)


def test_sorted_batches_restore_order():
    ids = [[1] * n for n in (5, 2, 9, 3)]
    seen = []
    for rows, batch in sorted_batches(ids, 2, pad_id=0):
        seen.extend(rows.tolist())
        assert batch["input_ids"].shape == (len(rows), max(len(ids[i]) for i in rows))
    assert seen == [1, 3, 0, 2]  # lengths 2, 3 | 5, 9
    widths = [batch["input_ids"].shape[1] for _, batch in sorted_batches(ids, 2, pad_id=0, multiple=8)]
    assert widths == [8, 16]
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0, multiple=4)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]


def test_padding_to_a_multiple_leaves_the_logits_as_they_were(tiny_models):
    """Batches padded to a multiple of 8 tokens (what bf16 passes use, so that matmul shapes repeat) give the
    logits of batches padded to their longest text: the extra positions are masked out. fp32 passes pad to the
    longest text, bf16 ones to a multiple of 8."""
    import torch

    from conftest import synthetic_rows
    from slmtune.data.tokenize import encode
    from slmtune.models.build import load_classifier, load_tokenizer
    from slmtune.precision import Precision

    model = load_classifier(tiny_models["bert"], ["a", "b", "c", "d"], pooling="mean").eval()
    tokenizer = load_tokenizer(tiny_models["bert"])
    ids = encode(tokenizer, [text for text, _ in synthetic_rows(20, seed=4)], 13, cache=False)  # longest: 13
    exact, padded = pad_batch(ids, 0), pad_batch(ids, 0, 8)
    assert padded["input_ids"].shape[1] % 8 == 0 and padded["input_ids"].shape[1] > exact["input_ids"].shape[1]
    with torch.inference_mode():
        torch.testing.assert_close(model(**padded).logits, model(**exact).logits, atol=1e-5, rtol=1e-5)
    assert (Precision("fp32", "cpu", "").pad_multiple, Precision("bf16", "cpu", "").pad_multiple) == (1, 8)


def test_metrics_match_sklearn():
    y_true = [0, 1, 2, 3, 0, 1, 2, 3, 0, 0]
    y_pred = [0, 1, 2, 2, 0, 3, 2, 3, 1, 0]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert sum(map(sum, m["confusion_matrix"])) == 10 and m["per_class"]["a"]["support"] == 4
    logits = np.eye(4)[y_pred] * 5
    trainer_view = compute_metrics((logits, np.array(y_true)))
    assert trainer_view["accuracy"] == pytest.approx(0.7) and 0 < trainer_view["gold_prob"] < 1
