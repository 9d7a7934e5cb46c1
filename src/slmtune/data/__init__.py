"""Data: sources, seeded splits, cleaning."""

from slmtune.data.clean import clean_text, clean_texts
from slmtune.data.sources import AG_NEWS_LABELS, TextDataset, load_ag_news, load_ag_news_csv, load_table
from slmtune.data.splits import Splits, load_splits, per_class_indices, stratified_indices, unseen_texts

__all__ = [
    "AG_NEWS_LABELS", "TextDataset", "Splits", "clean_text", "clean_texts", "load_ag_news", "load_ag_news_csv",
    "load_table", "load_splits", "per_class_indices", "stratified_indices", "unseen_texts",
]
