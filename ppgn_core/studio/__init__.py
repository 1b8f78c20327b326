"""The app's workflows without any UI, one module per tab over a shared core:

* :mod:`.core` — the loaded models, class names, run folders (:class:`StudioCore`), :class:`Update`;
* :mod:`.sampling` — streaming sampling (Sample tab);
* :mod:`.neurons` — multifaceted visualisation of a hidden unit (Neurons tab);
* :mod:`.tsne` — chain samples on a t-SNE grid (t-SNE tab);
* :mod:`.inpainting` — PPGN and PPGN-context side by side (Inpaint tab).

``app.py`` only lays these out and wires events to them.
"""

from ..nets.registry import ModelBundle
from .core import StudioCore, Update
from .inpainting import InpaintWorkflow, editor_background, mask_outline, mask_to_tensor
from .neurons import NeuronWorkflow
from .sampling import SamplingWorkflow
from .tsne import TsneWorkflow, embed_tsne, grid_image, pick_distinct, snap_to_grid


class Studio(StudioCore):
    """The core plus one workflow per tab: ``sampling``, ``neurons``, ``tsne``, ``inpainting``."""

    def __init__(self, bundle: ModelBundle, device: str = "cpu", workdir: str | None = None):
        super().__init__(bundle, device, workdir)
        self.sampling = SamplingWorkflow(self)
        self.neurons = NeuronWorkflow(self)
        self.tsne = TsneWorkflow(self)
        self.inpainting = InpaintWorkflow(self)

__all__ = ["Studio", "StudioCore", "Update", "SamplingWorkflow", "NeuronWorkflow", "TsneWorkflow",
           "InpaintWorkflow", "editor_background", "mask_to_tensor", "mask_outline", "embed_tsne",
           "snap_to_grid", "grid_image", "pick_distinct"]
