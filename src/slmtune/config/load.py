"""Loading a run config: YAML files, `key=value` overrides, dotted-key changes, and what a dataset brings."""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml

from slmtune.config.packaged import find_config
from slmtune.config.schema import _SECTIONS, METHOD_DEFAULTED, DataConfig, ModelConfig, RunConfig
from slmtune.errors import SlmtuneError

# What a dataset brings when the config leaves a field out: the AG News reference recipe's sizes.
DATASET_DEFAULTS = {"ag_news": {"train_size": 2400, "val_size": 240}}

# Fields that belong to a recipe's own dataset (AG News' reference sizes, its folder, its epochs): a study or an
# override that names another dataset leaves them out (slmtune.experiments.common.load_run_config), so they follow
# the data.
DATASET_BOUND = ("data.train_size", "data.val_size", "data.test_size", "data.data_dir", "data.test_file",
                 "train.epochs")


def _check_keys(cls: type, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise SlmtuneError(f"unknown config field {where}{key!r}; known: {', '.join(sorted(known))}")


def _coerce(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Each value checked against its field's type: numbers written as strings ("5e-4" is a string to YAML 1.1)
    become numbers, "a,b" becomes a list, 3.0 an int; anything else of the wrong type is a one-line error."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        if key in _SECTIONS and cls is RunConfig:
            continue
        hint = hints.get(key)
        if hint is not None:
            out[key] = _coerce_value(hint, value, f"{where}{key}")
    return out


def _coerce_value(hint: Any, value: Any, name: str) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str):  # "a,b" from the command line
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise SlmtuneError(f"config field {name} expects a list, got {value!r}")
        return [_coerce_value(args[0], item, name) for item in value] if args else value
    if typing.get_origin(hint) is Literal:  # a choice field: text here, checked by schema.check_choices
        hint = str
    if hint is bool:
        if not isinstance(value, bool):
            raise SlmtuneError(f"config field {name} expects true or false, got {value!r}")
        return value
    if hint in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise SlmtuneError(f"config field {name} expects a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise SlmtuneError(f"config field {name} expects a {'whole ' if hint is int else ''}number, "
                               f"got {value!r}")
        if hint is int:
            if not float(number).is_integer():
                raise SlmtuneError(f"config field {name} expects a whole number, got {value!r}")
            return int(number)
        return number
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `name: 2024` in YAML
        if not isinstance(value, str):
            raise SlmtuneError(f"config field {name} expects text, got {value!r}")
        return value
    return value


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Build a validated RunConfig from a nested dict (as read from YAML)."""
    if not isinstance(values, dict):
        raise SlmtuneError("a config must be a mapping of fields to values")
    _check_keys(RunConfig, values, "")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise SlmtuneError(f"config section {key!r} must be a mapping")
            _check_keys(_SECTIONS[key], value, f"{key}.")
            try:
                kwargs[key] = _SECTIONS[key](**_coerce(_SECTIONS[key], value, f"{key}."))
            except TypeError as exc:
                raise SlmtuneError(f"bad value in config section {key!r}: {exc}") from None
        else:
            kwargs[key] = value
    kwargs = _coerce(RunConfig, kwargs, "")
    try:
        return RunConfig(**kwargs)
    except TypeError as exc:
        raise SlmtuneError(f"bad config value: {exc}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=1", "lora.r=16"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SlmtuneError(f"override {item!r} is not key=value (e.g. train.epochs=1)")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if raw.strip() in ("|", ">", "-", "?", "|-", ">-"):
            value = raw  # YAML syntax alone, not a value (`|` would read as an empty block): a separator
        nest({key: value}, nested, f"override {item!r} conflicts with another override")
    return nested


def nest(dotted: dict[str, Any], into: dict[str, Any] | None = None, conflict: str = "conflicting keys") -> dict:
    """``{"train.epochs": 1}`` as ``{"train": {"epochs": 1}}`` (added to `into` when given); a key that would
    nest inside a plain value is the one-line error `conflict`."""
    nested = {} if into is None else into
    for key, value in dotted.items():
        target = nested
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SlmtuneError(conflict)
        target[leaf] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = find_config(path)
    if path.is_dir():
        raise SlmtuneError(f"{path} is a folder; give a config file (YAML) inside it")
    if not path.is_file():
        raise SlmtuneError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SlmtuneError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise SlmtuneError(f"config file {path} must hold a mapping of fields")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                method: str | None = None) -> RunConfig:
    """Config from an optional YAML file plus overrides (``key=value`` strings or a nested dict).

    `method` (`--method`) switches the method: where it differs from the file's, the file's method-defaulted
    values (learning rate, pooling) give way to the new method's defaults unless an override sets them."""
    values = load_yaml(path) if path else {}
    given = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    if method is not None:
        if method != values.get("model", {}).get("method", ModelConfig.method):
            for key in METHOD_DEFAULTED:
                section, name = key.split(".")
                if name not in given.get(section, {}):
                    values.get(section, {}).pop(name, None)
        given = merge(given, {"model": {"method": method}})
    return from_dict(with_dataset_defaults(merge(for_dataset(values, given), given)))


def for_dataset(values: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`values` (a recipe) without its DATASET_BOUND fields when `update` names another dataset: AG News'
    2,400 / 240 rows and 3 epochs do not carry over to someone's own file; `update`'s own fields still apply."""
    new = (update.get("data") or {}).get("dataset")
    if new is None or new == (values.get("data") or {}).get("dataset", DataConfig.dataset):
        return values
    values = dict(values)
    for key in DATASET_BOUND:
        section, name = key.split(".")
        if name in (values.get(section) or {}):
            values[section] = {k: v for k, v in values[section].items() if k != name}
    return values


def with_dataset_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the fields its dataset brings (DATASET_DEFAULTS) where they are left out."""
    data = values.get("data") or {}
    defaults = DATASET_DEFAULTS.get(data.get("dataset", DataConfig.dataset), {})
    return merge(values, {"data": {k: v for k, v in defaults.items() if k not in data}}) if defaults else values


def replace(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `config` with dotted-key changes, e.g. ``replace(cfg, **{"train.epochs": 1})``."""
    base = config.to_dict()
    if changes.get("model.method", config.model.method) != config.model.method:  # the new method's defaults
        for key in METHOD_DEFAULTED:
            if key not in changes:
                section, name = key.split(".")
                base[section][name] = None
    return from_dict(merge(base, nest(changes)))


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


