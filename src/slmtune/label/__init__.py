"""The labelling loop: from unlabelled texts to a classifier with a person in the loop (see slmtune.label.loop)."""
