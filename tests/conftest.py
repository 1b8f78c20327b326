import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = ROOT.parent / "shared" / "data" / "imagenette-128"


@pytest.fixture(scope="session")
def tiny():
    from ppgn_core.nets.registry import tiny_bundle

    return tiny_bundle(seed=0)


@pytest.fixture(scope="session")
def lite0():
    from ppgn_core.nets.classifiers import efficientnet_lite_classifier

    return efficientnet_lite_classifier(0)
