"""spectro: speech emotion recognition by transfer learning from ImageNet CNNs."""

__version__ = "0.1.0"
