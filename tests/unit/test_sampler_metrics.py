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
        assert batch["input_ids"].shape[0] == len(rows)
    assert sorted(seen) == [0, 1, 2, 3]
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


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
