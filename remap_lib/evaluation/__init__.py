"""Evaluation: the forward pass, metrics, calibration, retrieval, baselines, ablations and the study."""
