"""Prediction for users: the Predictor and streaming over many files."""
