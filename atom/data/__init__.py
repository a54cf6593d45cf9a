"""Datasets: source formats, validation, the immutable dataset-version contract, augmentation policies."""
