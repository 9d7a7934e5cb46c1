"""Reusable methods that studies call and users import: zero-shot classifiers, the few-shot prompt head,
sentence embeddings, active-learning query strategies."""
