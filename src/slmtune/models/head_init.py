"""Start fine-tuning from a linear probe (LP-FT, Kumar et al. 2022): fit a logistic regression on the frozen
model's own head features over the training rows, copy it into the output layer, then train as usual.

A random head sends large, arbitrary gradients into the pretrained encoder during the first steps; a probed
head starts near a good classifier, so fine-tuning moves the features less. Costs one inference pass over
the training rows and a second of scikit-learn.
"""

from __future__ import annotations

import numpy as np
import torch

from slmtune.data.tokenize import sorted_batches
from slmtune.errors import SlmtuneError
from slmtune.models.pooling import first_token_only


def has_output_layer(model: torch.nn.Module) -> bool:
    """Whether a probe can be copied into `model` (a linear layer with one output per label)."""
    num_labels = model.config.num_labels
    return any(isinstance(m, torch.nn.Linear) and m.out_features == num_labels for m in model.modules())


def output_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The last linear layer with one output per label (BERT's `classifier`, DistilBERT's `classifier`,
    RoBERTa's `classifier.out_proj`)."""
    num_labels = model.config.num_labels
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not layers:
        raise SlmtuneError(f"model.head_init=probe needs a linear output layer with {num_labels} outputs; "
                           f"{type(model).__name__} has none (use model.head_init=random)")
    return layers[-1]


@torch.inference_mode()
def head_features(model: torch.nn.Module, ids: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """What the output layer reads for each row (eval mode: no dropout), in input order."""
    layer = output_layer(model)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, args, output: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = np.zeros((len(ids), layer.in_features), dtype=np.float32)
    try:
        with first_token_only(model):  # the head reads the first token only
            for rows, batch in sorted_batches(ids, batch_size, pad_id):
                captured.clear()
                model(**{k: v.to(device) for k, v in batch.items()})
                features[rows] = captured[-1].float().cpu().numpy()
    finally:
        hook.remove()
        model.train(was_training)
    return features


def logistic_probe(features: np.ndarray, labels: list[int], c: float = 1.0, seed: int = 0):
    """A multinomial logistic regression (L2, inverse strength `c`) fitted on `features`; one or a few rows a
    class is what a probe is for, so scikit-learn's warning that there are many classes for the rows is not
    shown."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(features, labels)


def probe_head(model: torch.nn.Module, ids: list[list[int]], labels: list[int], pad_id: int, c: float = 1.0,
               seed: int = 0) -> float:
    """Fit the output layer as a multinomial logistic regression (L2, inverse strength `c`) on the frozen
    features of (ids, labels) and write it into the model; returns the probe's training accuracy."""
    features = head_features(model, ids, pad_id)
    probe = logistic_probe(features, labels, c, seed)
    layer = output_layer(model)
    coef, intercept = probe.coef_, probe.intercept_
    if len(probe.classes_) == 2:  # scikit-learn keeps one row for two classes: split it symmetrically
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weight, bias = np.zeros(tuple(layer.weight.shape)), np.full(layer.out_features, -10.0)  # unseen classes: never
    weight[probe.classes_], bias[probe.classes_] = coef, intercept
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    return float(probe.score(features, labels))


@torch.no_grad()
def prior_bias(model: torch.nn.Module, positives: np.ndarray, rows: int) -> None:
    """Multi-label heads: start each label's output bias at the log-odds of its share of training rows
    (the prior initialisation of Lin et al. 2017, focal loss), so training does not spend its first steps pushing
    every sigmoid from 0.5 down to the rare labels' frequencies."""
    share = np.clip(np.asarray(positives, dtype=np.float64) / max(rows, 1), 1e-4, 1 - 1e-4)
    layer = output_layer(model)
    if layer.bias is not None:
        layer.bias.copy_(torch.as_tensor(np.log(share / (1 - share)), dtype=layer.bias.dtype))
