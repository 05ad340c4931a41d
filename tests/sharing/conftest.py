from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from editgraph.cli.main import main

from . import testnodes  # noqa: F401  (registers sharetest.* node types)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: (exit code, stdout, stderr)."""

    def call(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call
