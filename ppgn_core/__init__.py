"""PPGN Studio core: Plug & Play Generative Networks (Nguyen et al., CVPR 2017) in PyTorch."""

__version__ = "0.1.0"
