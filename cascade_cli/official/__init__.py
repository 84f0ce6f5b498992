"""The authors' released checkpoints (reference B.11): download and convert them into cascade checkpoints.

    release.py  where the released models are on the Hub and what each was trained on (no torch)
    convert.py  fetching them from the Hub and converting the official per-module .pt files
"""
