"""Lazy imports of the optional metric dependencies, with an error that says how to install them."""
from __future__ import annotations

import importlib

EXTRA_HINT = "install the metrics extra: pip install 'mmpl-long-video[metrics]' (opencv-python-headless, scikit-image, matplotlib)"


def require(module: str):
    """Import `module` (e.g. "cv2") or raise ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"the quality metrics need {module!r}; {EXTRA_HINT}") from err
