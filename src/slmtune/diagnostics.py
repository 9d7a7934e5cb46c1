"""`slmtune env`: what a bug report needs (versions, device, threads, CPU features, precision, the packaged
model). Kept out of the run folder's modules, which describe a run without importing models."""

from __future__ import annotations

import json
from typing import Any

from slmtune.runs.folder import environment


def diagnostics() -> dict[str, Any]:
    """`slmtune env`: the environment, CPU bf16 support, what precision `auto` picks here, the packaged model."""
    from slmtune.errors import SlmtuneError
    from slmtune.models.build import resolve_model
    from slmtune.precision import cpu_bf16_support, resolve

    try:
        model = f"found and verified: {resolve_model('minilm-l6')}"
    except SlmtuneError as exc:
        model = f"missing: {exc}"
    return {**environment(), "cpu_bf16": cpu_bf16_support(), "precision_auto": resolve("auto").as_dict(),
            "packaged_model": model}


def diagnostics_text(env: dict[str, Any], as_json: bool = False) -> str:
    """`slmtune env`: `diagnostics()` one line per entry (packages joined), or as JSON."""
    if as_json:
        return json.dumps(env, indent=2, default=str)
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    return "\n".join(f"{k:<16}{packages if k == 'packages' else v}" for k, v in env.items())
