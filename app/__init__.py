"""Lookalike-audience platform on Ray.

TF Recommenders needs Keras 2, so ``TF_USE_LEGACY_KERAS`` must be set before TensorFlow is first
imported in *every* process. Importing the package is the one place all our entry points share
(CLI, Ray workers, Serve replicas, pytest), so it is set here and nowhere else.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
