"""The config reference (`slmtune config`, docs/config.md), generated from the schema's field docstrings."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import yaml

from slmtune.config.schema import _SECTIONS, METHOD_DEFAULTED, RunConfig


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source: Python keeps no attribute docs)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def reference_rows() -> list[tuple[str, str, str]]:
    """(dotted field, default, help) for every run-config field, in declaration order. The method-defaulted
    fields show null: they take the method's value when the config is loaded."""
    defaults = RunConfig().to_dict()
    for key in METHOD_DEFAULTED:
        section, name = key.split(".")
        defaults[section][name] = None
    rows = [(f.name, _shown(defaults[f.name]), field_docs(RunConfig).get(f.name, ""))
            for f in fields(RunConfig) if f.name not in _SECTIONS]
    for section, cls in _SECTIONS.items():
        docs = field_docs(cls)
        rows += [(f"{section}.{f.name}", _shown(defaults[section][f.name]), docs.get(f.name, "")) for f in fields(cls)]
    return rows


def _shown(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def reference_text(prefix: str = "") -> str:
    """`slmtune config`: each field starting with `prefix` as `key = default` and its help on the next line."""
    return "".join(f"{key} = {default}\n    {help_text}\n" for key, default, help_text in reference_rows()
                   if key.startswith(prefix))


def reference_markdown() -> str:
    """docs/config.md: every field with its default and help, generated from the dataclasses (a test keeps the
    file equal to this)."""
    lines = ["# Config reference", "",
             "Every field of a run config, as `slmtune config` prints it; generated from the field docstrings in",
             "`src/slmtune/config/schema.py` (regenerate with `slmtune config --markdown > docs/config.md`). Set a",
             "field in a YAML recipe (`train:` / `epochs: 1`) or on the command line (`train.epochs=1`).", ""]
    section = None
    for key, default, help_text in reference_rows():
        name = key.split(".")[0] if "." in key else "run"
        if name != section:
            section = name
            lines += ["", f"## {name}", "", "| field | default | meaning |", "|---|---|---|"]
        lines.append(f"| `{key}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


