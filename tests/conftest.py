import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# PPGN_TEST_THREADS: fewer threads when the tests share the CPU with a training run (two processes
# that each spin two threads on two cores slow each other down many times over)
torch.set_num_threads(int(os.environ.get("PPGN_TEST_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))

DATA = ROOT.parent / "shared" / "data" / "imagenette-128"


@pytest.fixture(scope="package")
def tiny():
    from ppgn_core.nets.registry import tiny_bundle

    return tiny_bundle(seed=0)


@pytest.fixture(scope="package")
def lite0():
    from ppgn_core.nets.classifiers import efficientnet_lite_classifier

    return efficientnet_lite_classifier(0)
