from __future__ import annotations

import numpy as np
from PIL import Image

from . import testnodes  # noqa: F401  (registers sharetest.* node types)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()

