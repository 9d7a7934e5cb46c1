"""int8 that keeps the predictions: two engines and one search.

- ONNX Runtime's dynamic int8 (`onnx-int8`): weights per output channel, activations with one scale per tensor
  (all tokens of a batch) at run time.
- torchao's dynamic int8 (`torch-int8`): weights per output channel, activations per token, compiled by Inductor,
  with SmoothQuant's migration (Xiao et al., ICML 2023): each layer's input channels are divided by a factor
  measured on the run's rows and its weight columns multiplied by it, so activation outliers move into the
  weights, which have a scale per output channel.

BERT-class activations carry a few outlier channels (Bondarenko et al., EMNLP 2021), so a few layers lose most of
the precision, above all with one scale per tensor. Each linear layer's own error under the engine's scheme is
measured on the run's rows in one fp32 pass; the search then keeps the worst 0, 1, 2, 4, ... layers in fp32 up to
the first plan whose predictions differ from fp32's on at most SEARCH_MARGIN of the budget on its rows, then
bisects down to the fewest layers that still hold it (`--backend auto` then checks the whole budget on rows the
search never saw). The embeddings' lookup tables stay fp32 (a lookup has no matmul to speed up); ONNX Runtime's
CPU kernels have no bf16 matmul, so fp32 it is.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmtune.data.tokenize import encode, sorted_batches
from slmtune.serve import kept

PLAN_FILE = "int8.json"


def check_budget(max_change: float) -> float:
    """`max_change` if it is a share of rows an engine may change, else a one-line error."""
    from slmtune.errors import SlmtuneError

    if not 0 <= max_change < 1:
        raise SlmtuneError(f"--max-change must be in [0, 1), got {max_change}")
    return max_change


def quantize(raw: str | Path, out: str | Path, keep_fp32: list[str] | tuple[str, ...] = ()) -> None:
    """Dynamic int8 of the plain ONNX graph `raw` into `out`: weights per output channel, activations per tensor
    at run time; the matmul nodes named in `keep_fp32` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process applies to static mode
    try:
        quantize_dynamic(str(raw), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=list(keep_fp32))
    finally:
        logging.getLogger().setLevel(quiet)


def _linear_inputs(model, tokenizer, texts: list[str], max_length: int, truncation: str, batch_size: int,
                   record: Callable[[str, torch.nn.Linear, torch.Tensor], None]) -> None:
    """One fp32 pass over `texts` calling `record(name, layer, its input)` for every linear layer."""
    handles = [m.register_forward_hook(lambda module, inputs, output, name=n: record(name, module,
                                                                                   inputs[0].detach().float()))
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        ids = encode(tokenizer, texts, max_length, cache=False, truncation=truncation)
        with torch.inference_mode():
            for _, batch in sorted_batches(ids, batch_size, tokenizer.pad_token_id or 0):
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def smoothing(model, tokenizer, texts: list[str], max_length: int, truncation: str = "head", batch_size: int = 64,
              alpha: float | None = None) -> dict[str, torch.Tensor]:
    """SmoothQuant's factor for each linear layer's input channels, s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha)
    over `texts` (x / s goes into int8 per token, W * s per output channel: the same product, the outliers in the
    weights)."""
    alpha = SMOOTHING_ALPHA if alpha is None else alpha
    absmax: dict[str, torch.Tensor] = {}

    def record(name: str, module: torch.nn.Linear, x: torch.Tensor) -> None:
        seen = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
        absmax[name] = torch.maximum(absmax[name], seen) if name in absmax else seen

    _linear_inputs(model, tokenizer, texts, max_length, truncation, batch_size, record)
    weights, eps = dict(model.named_modules()), torch.finfo(torch.float32).eps
    return {name: (seen + eps) ** alpha / (weights[name].weight.detach().float().abs().amax(dim=0) + eps) ** (
        1 - alpha) for name, seen in absmax.items()}


def layer_errors(model, tokenizer, texts: list[str], max_length: int, truncation: str = "head",
                 batch_size: int = 64, per_token: bool = False,
                 smooth: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Each linear layer's relative output error, ||x_q W_q - x W|| / ||x W|| over `texts`, with its weight
    quantized per output channel (symmetric int8) and its input as ONNX Runtime's DynamicQuantizeLinear does
    (uint8, one scale and zero point per tensor) or, `per_token`, as torchao's dynamic int8 does (symmetric, a
    scale per token), after `smooth`'s factors where given: the order in which the search keeps layers in fp32."""
    squared = {}

    def quantized_input(x: torch.Tensor) -> torch.Tensor:
        if per_token:
            scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127
            return torch.round(x / scale).clamp(-127, 127) * scale
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (high - low) / 255 or 1.0
        zero = round(-low / scale)
        return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale

    def record(name: str, module: torch.nn.Linear, x: torch.Tensor) -> None:
        w = module.weight.detach().float()
        exact = x @ w.T
        if smooth and name in smooth:
            x, w = x / smooth[name], w * smooth[name]
        xq = quantized_input(x)
        wscale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        wq = torch.round(w / wscale).clamp(-127, 127) * wscale
        error, total = squared.get(name, (0.0, 0.0))
        squared[name] = (error + float(((xq @ wq.T) - exact).square().sum()), total + float(exact.square().sum()))

    _linear_inputs(model, tokenizer, texts, max_length, truncation, batch_size, record)
    return {name: (error / total) ** 0.5 if total else 0.0 for name, (error, total) in squared.items()}


def node_names(raw: str | Path, modules: list[str]) -> dict[str, str]:
    """The ONNX matmul node of each linear module, matched by the scope path the torch exporter gives it
    (`/model/bert/encoder/layer.0/output/dense/MatMul` for `bert.encoder.layer.0.output.dense`)."""
    import onnx

    graph = onnx.load(str(raw), load_external_data=False).graph
    wanted, found = set(modules), {}
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            parts = node.name.replace("/", ".").rsplit(".", 1)[0].split(".")
            for suffix in (".".join(parts[i:]) for i in range(1, len(parts))):  # a lookup per suffix of the scope
                if suffix in wanted:
                    found[suffix] = node.name
    return found


SMOOTHING_ALPHA = 0.5
"""SmoothQuant's migration strength for torch-int8 (the paper's default for BERT-class models). With every layer
int8, on 1,000 training rows: 0.4% -> 0.1% of predictions changed on the default AG News LoRA run, 1.9% -> 1.1% on
Debian package descriptions (there torchao's own SmoothQuant, calibrated on validation rows, changed 0.9% at 0.5
and 1.4% at 0.75)."""
SMOOTHING_FILE = "torch-int8.safetensors"
"""The smoothing factors a torch-int8 plan was searched with, kept beside it in RUN_DIR (safetensors, no pickle)."""
SEARCH_MARGIN = 0.5
"""The search stops at a change of at most this share of the budget on its own rows: a sample of 1,000 rows
puts a plan measured at 0.5% anywhere from about 0.1% to 1% on others, and `--backend auto` checks the
plan against the whole budget on rows the search never saw."""


def search(errors: dict[str, float], predict: Callable[[list[str]], np.ndarray], reference: np.ndarray,
           max_change: float, margin: float = SEARCH_MARGIN) -> dict[str, Any]:
    """Keep in fp32 the 0, 1, 2, 4, ... layers with the largest `errors` (at most half of them) until
    `predict(layers kept in fp32)`'s decisions differ from `reference` on at most `margin * max_change` of its
    rows, then bisect between the last count that failed and the first that held (each layer kept in fp32 costs
    speed). Returns the plan: the layers kept in fp32, the change it measured, and every try."""
    ranked = sorted(errors, key=lambda module: -errors[module])
    target, cap, tries = margin * max_change, len(ranked) // 2, []

    def change_with(kept: int) -> float:
        changed = float(np.mean((predict(ranked[:kept]) != reference).any(axis=1)))
        tries.append({"kept_fp32": kept, "changed": round(changed, 5)})
        return changed

    kept, failed = 0, None
    changed = change_with(kept)
    while changed > target and max(1, kept * 2) <= cap:
        failed, kept = kept, max(1, kept * 2)
        changed = change_with(kept)
    if changed <= target and failed is not None:
        while kept - failed > 1:
            middle = (failed + kept) // 2
            tried = change_with(middle)
            if tried <= target:
                kept, changed = middle, tried
            else:
                failed = middle
    return {"kept_fp32": ranked[:kept], "int8_layers": len(ranked) - kept, "changed": round(changed, 5),
            "within_budget": changed <= max_change, "target": target,
            "rows": len(reference), "layer_errors": {m: round(errors[m], 5) for m in ranked}, "tries": tries}


def decisions(run, logits: np.ndarray) -> np.ndarray:
    """(rows, k) decisions to compare between engines: the predicted class, or the label set of a multi-label
    run at its thresholds (a row changes when any label does)."""
    if run.multi_label:
        from slmtune.multilabel import decide, sigmoid

        return decide(sigmoid(logits), run.thresholds)
    return logits.argmax(axis=1)[:, None]


def measured_rows(run, check_rows: int = 1000, rows: int = 1000) -> tuple[list[str], list[str]]:
    """(`--backend auto`'s check rows, the layer search's rows): never test rows, never the same rows (unless the
    data holds too few), and rows the model never trained on first (data.unseen_texts: validation, then spare
    rows of the training file), since a model is surer of its training rows and an engine changes fewer of them
    (onnx-int8 on the default AG News LoRA run: 0.10% of 1,000 training rows changed, 0.72% of 7,600 test rows)."""
    from slmtune.data import load_splits, unseen_texts

    splits = load_splits(run.config.data, run.config.seed)
    ordered = unseen_texts(splits, run.config.data, run.config.seed, check_rows + rows) + splits.train.texts
    return ordered[:check_rows], (ordered[check_rows:] or splits.train.texts)[:rows]


def search_rows(run, check_rows: int = 1000, rows: int = 1000) -> list[str]:
    """The layer search's rows (measured_rows)."""
    return measured_rows(run, check_rows, rows)[1]


def readable_rows(run, rows: int = 1000) -> list[str] | None:
    """search_rows, or None (said in one line) when the run's data cannot be read here (a folder copied without
    it): the rows the smoothing factors and the layer search are measured on, read once for both."""
    from slmtune.errors import SlmtuneError

    try:
        return search_rows(run, rows=rows)
    except (SlmtuneError, OSError) as exc:
        print(f"slmtune: int8 without the layer search ({exc}): every layer quantized", flush=True)
        return None


def _search_for_run(run, texts: list[str] | None, max_change: float, per_token: bool,
                    build: Callable[[list[str]], Any], only: set[str] | None = None,
                    smooth: dict[str, torch.Tensor] | None = None) -> dict[str, Any] | None:
    """The layer search on `texts` (the run's own rows, readable_rows) against its fp32 torch decisions,
    over the linear layers in `only` (default all), `build(layers kept in fp32)` giving an engine predict_logits
    runs; None without texts (the run's data cannot be read here)."""
    from slmtune.precision import resolve as resolve_precision
    from slmtune.serve.logits import predict_logits

    if texts is None:
        return None
    data = run.config.data
    kwargs = {"batch_size": run.config.train.eval_batch_size, "max_length": data.max_length,
              "truncation": data.truncation, "cache": False}
    reference = decisions(run, predict_logits(run.model, run.tokenizer, texts, precision=resolve_precision("fp32"),
                                              **kwargs))
    errors = layer_errors(run.model, run.tokenizer, texts[:256], data.max_length, data.truncation,
                          run.config.train.eval_batch_size, per_token=per_token, smooth=smooth)
    errors = {m: e for m, e in errors.items() if only is None or m in only}
    return search(errors, lambda fp32_layers: decisions(run, predict_logits(build(fp32_layers), run.tokenizer, texts,
                                                                            **kwargs)),
                  reference, max_change)


def _announce(engine: str, plan: dict[str, Any], max_change: float) -> None:
    print(f"slmtune: {engine} with {len(plan['kept_fp32'])} of {len(plan['kept_fp32']) + plan['int8_layers']} "
          f"linear layers kept in fp32: {plan['changed']:.2%} of {plan['rows']} of the run's rows changed against "
          f"fp32 (searched to {SEARCH_MARGIN:.0%} of the {max_change:.2%} budget)", flush=True)


def _plan(run, texts: list[str] | None, path: Path, engine: str, max_change: float, per_token: bool,
          build: Callable[[list[str]], Any], only: set[str] | None = None,
          smooth: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The layer search's plan for `engine` on `texts` (every layer quantized without them: the run's data cannot
    be read here), with `extra` fields, kept at `path` for this budget and machine, and announced."""
    plan = _search_for_run(run, texts, max_change, per_token, build, only, smooth=smooth) or {
        "kept_fp32": [], "within_budget": None}
    plan = kept.save(path, {**plan, **(extra or {})}, max_change)
    if plan.get("rows"):
        _announce(engine, plan, max_change)
    return plan


def for_run(run, max_change: float) -> Callable[[Path, Path], None]:
    """What export_onnx calls to quantize a run's ONNX graph: the layer search, the plan written to PLAN_FILE
    beside the int8 model (with every layer quantized when the run's data cannot be read)."""
    from slmtune.serve.backends import OnnxClassifier

    def quantize_run(raw: Path, out: Path) -> None:
        nodes = node_names(raw, [n for n, m in run.model.named_modules() if isinstance(m, torch.nn.Linear)])

        def build(fp32_layers: list[str]):
            quantize(raw, out, [nodes[m] for m in fp32_layers if m in nodes])
            return OnnxClassifier(out, len(run.label_names), threads=run.config.train.threads)

        plan = _plan(run, readable_rows(run), Path(out).parent / PLAN_FILE, "onnx-int8", max_change, False, build,
                     only=set(nodes))
        quantize(raw, out, [nodes[m] for m in plan["kept_fp32"] if m in nodes])  # the search's last try may not
        # be the plan

    return quantize_run


COMPILED_PLAN_FILE = "torch-int8.json"


def torchao_missing() -> str | None:
    """Why the torch-int8 engine cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        return "torch-int8 needs torchao: pip install 'slmtune[fast]'"
    return None


@contextlib.contextmanager
def quiet_torchao():
    """Inductor warns, compiling torchao's int8 tensors, that they cannot be hashed for one of its caches: not the
    user's concern. (Its import's log lines are silenced for the whole package in slmtune/__init__.py.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching")
        yield


def torch_int8(run, run_dir: str | Path, max_change: float):
    """The run's model with torchao's dynamic int8 (weights per output channel, activations per token, both
    symmetric) after SmoothQuant's migration, the layers its search keeps in fp32 left as they are, for Inductor
    to compile (torchao's int8 runs eagerly too, slower than fp32). The plan is searched on the uncompiled model
    once per budget and machine and kept in RUN_DIR/torch-int8.json, its smoothing factors beside it."""
    import copy

    from safetensors.torch import load_file, save_file
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig as config
    from torchao.quantization import quantize_

    def build(fp32_layers: list[str], factors: dict[str, torch.Tensor]):
        model = copy.deepcopy(run.model).float().eval()
        chosen = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in fp32_layers}
        with torch.no_grad():
            for name, module in chosen.items():
                if name in factors:
                    module.weight.mul_(factors[name])  # the weight's columns take the factors the inputs lose
        quantize_(model, config(), filter_fn=lambda module, name: name in chosen)
        for name, module in chosen.items():
            if name in factors:  # torchao multiplies the activations by this before quantizing them
                module.weight.act_pre_scale = 1.0 / factors[name]
        return model

    path, factors_path = Path(run_dir) / COMPILED_PLAN_FILE, Path(run_dir) / SMOOTHING_FILE
    plan = kept.load(path, max_change)
    try:
        factors = load_file(factors_path) if plan and plan.get("smoothing_alpha") else {}
    except Exception:  # noqa: BLE001 (missing, or damaged in any way safetensors reports: searched again)
        plan = None
    if plan is None or plan.get("smoothing_alpha", -1) not in (SMOOTHING_ALPHA, None):  # None: no data to smooth on
        texts = readable_rows(run)
        factors = _smoothing_for_run(run, texts[:256]) if texts else {}
        if factors:
            save_file(factors, factors_path)
        plan = _plan(run, texts, path, "torch-int8", max_change, True, lambda layers: build(layers, factors),
                     smooth=factors, extra={"smoothing_alpha": SMOOTHING_ALPHA if factors else None})
    return build(plan["kept_fp32"], factors)


def _smoothing_for_run(run, texts: list[str]) -> dict[str, torch.Tensor]:
    """SmoothQuant's factors measured on `texts`, the run's own rows that the layer search measures errors
    on."""
    data = run.config.data
    return {name: factor.contiguous() for name, factor in smoothing(
        run.model, run.tokenizer, texts, data.max_length, data.truncation, run.config.train.eval_batch_size).items()}
