"""Anomaly alerts: the CascadeFormer-Agent done offline and evaluated honestly."""
