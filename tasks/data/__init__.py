"""Ratings schema, readers, validation, snapshots, synthetic data and the bootstrap loader."""

from tasks.data.snapshot import build_snapshot
from tasks.data.synthetic import PRESETS, generate, generate_preset
from tasks.schema import DataValidationError, Problem, read_items, read_ratings, validate_ratings

__all__ = [
    "PRESETS", "DataValidationError", "Problem", "build_snapshot", "generate", "generate_preset",
    "read_items", "read_ratings", "validate_ratings",
]
