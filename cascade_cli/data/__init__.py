"""Datasets: the prepared on-disk format, the built-in synthetic dataset, and training-time loading."""
