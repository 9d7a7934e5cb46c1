"""slmtune: fine-tune small language models (full and LoRA) for text classification."""

from slmtune.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig, load_config
from slmtune.data import TextDataset, clean_text, load_ag_news, load_splits, load_table
from slmtune.errors import SlmtuneError
from slmtune.evaluate import classification_metrics, compute_metrics, predict_proba
from slmtune.inference import evaluate_run, load_run, predict
from slmtune.models import get_model, load_classifier, load_tokenizer
from slmtune.train import RunResult, train

__version__ = "0.1.0"

__all__ = [
    "DataConfig", "LoraConfig", "ModelConfig", "RunConfig", "TrainConfig", "load_config", "TextDataset",
    "clean_text", "load_ag_news", "load_splits", "load_table", "SlmtuneError", "classification_metrics",
    "compute_metrics", "predict_proba", "evaluate_run", "load_run", "predict", "get_model", "load_classifier",
    "load_tokenizer", "RunResult", "train",
]
