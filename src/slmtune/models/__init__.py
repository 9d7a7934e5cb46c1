"""Everything that shapes the network: building and loading (LoRA from PEFT), the pooling layer, head
initialisation, the fast dropout."""

from slmtune.models.build import (  # noqa: F401
    add_lora,
    get_model,
    load_classifier,
    load_tokenizer,
    param_counts,
    resolve_model,
)
