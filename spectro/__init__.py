"""spectro: speech emotion recognition by transfer learning from ImageNet CNNs.

``from spectro import Predictor`` is the Python API for new audio; see ``spectro.inference``.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "Prediction", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so `import spectro` (and `spectro --help`) stays instant.
    if name in ("Predictor", "Prediction"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'spectro' has no attribute {name!r}")
