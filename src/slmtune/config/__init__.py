"""Typed run configuration: the schema (dataclasses, `Literal` choices), YAML loading and `key=value` overrides,
the packaged recipes, and the generated reference. `import slmtune.config` loads no torch."""

from slmtune.config.load import (
    DATASET_BOUND,
    DATASET_DEFAULTS,
    dump_yaml,
    for_dataset,
    from_dict,
    load_config,
    load_yaml,
    merge,
    nest,
    parse_overrides,
    replace,
    with_dataset_defaults,
)
from slmtune.config.packaged import PACKAGED_CONFIGS, find_config
from slmtune.config.reference import field_docs, reference_markdown, reference_rows, reference_text
from slmtune.config.schema import (
    AUGMENT_OPS,
    BLENDS,
    CLEAN_RULES,
    DEFAULT_LR,
    DEFAULT_POOLING,
    EDA_OPS,
    HEAD_INITS,
    METHOD_DEFAULTED,
    METHODS,
    POOLINGS,
    TRUNCATIONS,
    DataConfig,
    LoraConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    check_choices,
    dataset_slug,
)

__all__ = [
    "AUGMENT_OPS", "BLENDS", "CLEAN_RULES", "DATASET_BOUND", "DATASET_DEFAULTS", "DEFAULT_LR", "DEFAULT_POOLING",
    "EDA_OPS", "HEAD_INITS", "METHODS", "METHOD_DEFAULTED", "PACKAGED_CONFIGS", "POOLINGS", "TRUNCATIONS",
    "DataConfig", "LoraConfig", "ModelConfig", "RunConfig", "TrainConfig", "check_choices", "dataset_slug",
    "dump_yaml", "field_docs", "find_config", "for_dataset", "from_dict", "load_config", "load_yaml", "merge",
    "nest", "parse_overrides", "reference_markdown", "reference_rows", "reference_text", "replace",
    "with_dataset_defaults",
]
