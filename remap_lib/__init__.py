"""remap: the reproducible companion to deep-REMAP (Gilda 2025, arXiv:2510.09362).

The user-facing entry points are :func:`predict` and :class:`Predictor`, :func:`predict_files` for many
files and :func:`read_predictions` for what it wrote, imported lazily so that ``import remap_lib`` stays
fast; everything else lives in its own module (``remap_lib.spectra.preprocess``, ``remap_lib.training.train``,
...).
"""

__all__ = ["predict", "Predictor", "predict_files", "read_predictions"]


def __getattr__(name):
    if name in ("predict", "Predictor"):
        from remap_lib.prediction import inference

        return getattr(inference, name)
    if name == "predict_files":
        from remap_lib.prediction.streaming import predict_files

        return predict_files
    if name == "read_predictions":
        from remap_lib.prediction.tables import read_predictions

        return read_predictions
    raise AttributeError(f"module 'remap_lib' has no attribute {name!r}")
