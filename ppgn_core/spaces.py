"""What the sampler moves: pixels x (PPGN-x), a code h mapped by G (DGN-AM, PPGN-h, Joint PPGN-h),
or a Fourier parameterisation with decorrelated colour (a hand-designed prior, Sec. S7)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class Space:
    """A sampled variable z and its image x = to_image(z) in [0, 1]."""

    name = "space"
    #: spread of z, used by the release's normalised step (step = lr·scale·d/mean|d|)
    step_scale: float = 1.0
    #: the range z is clamped to after every step, or None
    clamp_range: tuple[float, float] | None = None

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init(self, batch: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """A starting point for real images x (B×3×H×W in [0, 1])."""
        raise NotImplementedError(f"{self.name} cannot start from an image")

    def clamp(self, z: torch.Tensor) -> torch.Tensor:
        if self.clamp_range is None:
            return z
        return z.clamp(*self.clamp_range)


class PixelSpace(Space):
    """z is the image itself (PPGN-x, fooling images); clamped to [0, 1]."""

    name = "x"
    clamp_range = (0.0, 1.0)

    def __init__(self, size: int = 128, init_std: float = 0.1):
        self.size, self.init_std = size, init_std
        self.step_scale = 0.25

    def to_image(self, z):
        return z

    def init(self, batch, gen, device):
        z = 0.5 + self.init_std * torch.randn(batch, 3, self.size, self.size, generator=gen)
        return z.clamp(0, 1).to(device)

    def encode(self, x):
        if x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.clone()


class CodeSpace(Space):
    """z is a code h; the image is G(h) (paper Eq. 10–11).

    ``mean``/``std`` describe real codes E(x) (per element or scalars) and give random starts;
    ``clamp_range`` is the range real codes take (the release clamps fc6 codes to [0, 30]).
    """

    name = "h"

    def __init__(self, generator: nn.Module, encoder: nn.Module | None, code_shape: tuple[int, ...],
                 mean: torch.Tensor | float = 0.0, std: torch.Tensor | float = 1.0,
                 clamp_range: tuple[float, float] | None = None, init_scale: float = 1.0):
        self.generator, self.encoder = generator, encoder
        self.code_shape = tuple(code_shape)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        self.clamp_range = clamp_range
        self.init_scale = init_scale
        self.step_scale = float(self.std.mean()) if self.std.numel() > 1 else float(self.std)

    def to_image(self, z):
        return self.generator(z)

    def init(self, batch, gen, device):
        noise = torch.randn(batch, *self.code_shape, generator=gen)
        z = self.mean + self.init_scale * self.std * noise
        return self.clamp(z.to(device))

    def encode(self, x):
        if self.encoder is None:
            raise ValueError("this model has no encoder E to start from a real image")
        with torch.no_grad():
            return self.encoder(x)


# ImageNet colour correlation, square root of its covariance (a public constant used by Lucid).
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


class FourierSpace(Space):
    """Image parameterised by its Fourier coefficients, scaled by 1/frequency, in a decorrelated
    colour space, squashed by a sigmoid (the Lucid/Lucent "fft + decorrelate" image)."""

    name = "fourier"

    def __init__(self, size: int = 128, decay: float = 1.0, init_std: float = 0.01):
        self.size, self.decay, self.init_std = size, decay, init_std
        fy = torch.fft.fftfreq(size).view(-1, 1)
        fx = torch.fft.rfftfreq(size).view(1, -1)
        freq = torch.sqrt(fx ** 2 + fy ** 2)
        self.scale = 1.0 / torch.clamp(freq, min=1.0 / size) ** decay
        self.scale = self.scale / self.scale.max() * math.sqrt(size * size) / 4
        self.color = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
        self.step_scale = init_std * 10

    def to_image(self, z):
        spec = torch.complex(z[..., 0], z[..., 1]) * self.scale.to(z.device)
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho")
        img = torch.einsum("bchw,dc->bdhw", img, self.color.to(z.device))
        return torch.sigmoid(img)

    def init(self, batch, gen, device):
        shape = (batch, 3, self.size, self.size // 2 + 1, 2)
        return (self.init_std * torch.randn(shape, generator=gen)).to(device)
