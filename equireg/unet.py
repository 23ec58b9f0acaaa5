"""The U-Net used for every displacement step (Ψ) of GradICON and CARL: ICON's ``tallUNet2``.

``TallUNet2(dimension)(moving, fixed)`` returns a displacement field ``[B, D, *S]`` in [0, 1]
coordinate units (see :mod:`equireg.transforms`), to be wrapped by
:class:`equireg.wrappers.DisplacementField`.

Architecture (icon-registration 1.1.9 ``networks.UNet2`` with 5 levels): the input is
``cat(moving, fixed)``; each down level is a stride-2 3x3 convolution of the leaky-ReLU'd input
plus an average-pooled residual path; each up level is a 4x4 stride-2 transposed convolution
plus a linearly upsampled residual path, BatchNorm, then concatenation with the skip. The last
3x3 convolution is zero-initialised, so a fresh network predicts the identity, and the output is
divided by 10. Parameter names (``downConvs``, ``upConvs``, ``batchNorms``, ``lastConv``) and
the order in which layers are created are upstream's, so upstream state dicts load with
``strict=True`` and the same seed gives the same initial weights.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

DOWN_CHANNELS = (16, 32, 64, 256, 512)
UP_CHANNELS = (16, 32, 64, 128, 256)
MIN_SIZE_3D = 2 ** (len(DOWN_CHANNELS) - 1) + 1
#: on the CPU, up convolutions of 3-D inputs with at most this many voxels run as one matmul
#: (:func:`small_transposed_conv`): oneDNN took 30-110 ms for the fwd+bwd of the deepest ones
#: (512 channels on 1-8 voxels, one thread), the matmul 2-3x less; from 27 voxels on oneDNN wins
SMALL_TRANSPOSED_VOXELS = 8
#: on the CPU, 3-D up and last convolutions with at most this many output channels run in
#: channels-last layout: oneDNN's
#: kernels for few output channels are 2-3x faster there (fwd+bwd of the 18 -> 3 last
#: convolution at 48³: 129 ms contiguous, 45 ms channels-last, one thread)
CHANNELS_LAST_OUT_CHANNELS = 16

_LAYERS = {
    1: (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, F.avg_pool1d, "linear"),
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, F.avg_pool2d, "bilinear"),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, F.avg_pool3d, "trilinear"),
}


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the first ``channels`` channels of ``x``, or zero-pad in front up to ``channels``.

    Padding in front means a residual path adds onto the *last* channels of a wider tensor.
    """
    x = x[:, :channels]
    missing = channels - x.shape[1]
    if missing > 0:
        x = torch.cat([x.new_zeros(x.shape[0], missing, *x.shape[2:]), x], 1)
    return x


def small_transposed_conv(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``conv(x)`` for a transposed convolution with kernel 4, stride 2 and padding 1 (every up
    convolution of :class:`TallUNet2`), as one matmul and 2^D shifted sums: equal to oneDNN's
    result to float round-off and faster when ``x`` has few voxels.

    Kernel tap ``k = 2a + b`` of input voxel ``i`` lands on output ``2(i + a) + b - 1`` (per
    axis), so the matmul's ``[B, Cout, 2^D taps, *n]`` columns, shifted by ``a`` and interleaved
    by ``b``, sum to the output.
    """
    batch, channels, *size = x.shape
    dimension, out_channels = len(size), conv.out_channels
    columns = x.flatten(2).transpose(1, 2) @ conv.weight.reshape(channels, -1)  # [B, n^D, Cout * 4^D]
    columns = columns.view(batch, *size, out_channels, *[2] * (2 * dimension))
    # -> [B, Cout, a_1..a_D, b_1..b_D, i_1..i_D]
    a_axes = [dimension + 2 + 2 * d for d in range(dimension)]
    columns = columns.permute(0, dimension + 1, *a_axes, *[a + 1 for a in a_axes], *range(1, dimension + 1))
    total = 0
    for shift in itertools.product((0, 1), repeat=dimension):
        padding = [p for a in reversed(shift) for p in (a, 1 - a)]  # F.pad wants the last axis first
        total = total + F.pad(columns[(slice(None), slice(None), *shift)], padding)
    # [B, Cout, b_1..b_D, j_1..j_D] -> [B, Cout, j_1, b_1, ..., j_D, b_D]: position 2j + b
    order = [axis for d in range(dimension) for axis in (2 + dimension + d, 2 + d)]
    out = total.permute(0, 1, *order).reshape(batch, out_channels, *[2 * n + 2 for n in size])
    out = out[(slice(None), slice(None), *[slice(1, -1)] * dimension)]
    return out + conv.bias.view(1, -1, *[1] * dimension)


def _layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``; on the CPU a 3-D layer with few output channels is computed in channels-last
    layout (:data:`CHANNELS_LAST_OUT_CHANNELS`) and returned contiguous: the same sums in another
    order. GPUs keep torch's choice (not measured)."""
    if x.is_cpu and x.dim() == 5 and layer.out_channels <= CHANNELS_LAST_OUT_CHANNELS:
        return layer(x.contiguous(memory_format=torch.channels_last_3d)).contiguous()
    return layer(x)


class TallUNet2(nn.Module):
    """ICON's ``tallUNet2``: ``forward(moving, fixed) -> displacement [B, dimension, *S]``.

    It stays float32 in bf16 runs (it has no ``precision`` for :func:`equireg.devices.set_precision`
    to set): measured on an AMX Xeon (one thread, batch 4, ``benchmarks/train_step.py``), a GradICON
    step in bf16 with channels-last took 0.97 s against 0.71 s in fp32 at 98x70 and gained only
    1.18x at 196x141, 0.94x in 3-D at 48³. Its convolutions have few channels (16-64) on the large
    maps, where they are memory-bound, and many (256-512) only on maps of a few voxels, so bf16
    barely speeds up their backward; what it adds costs more: casting 14 M weights per call (a
    fifth of the step) and channels-last BatchNorm backward (6x slower than in fp32).
    """

    def __init__(self, dimension: int, input_channels: int = 1):
        super().__init__()
        if dimension not in _LAYERS:
            raise ValueError(f"TallUNet2: dimension must be 1, 2 or 3, got {dimension!r}")
        if input_channels < 1:
            raise ValueError(f"TallUNet2: input_channels must be >= 1, got {input_channels!r}")
        conv, conv_transpose, batch_norm, self._avg_pool, self._interpolation = _LAYERS[dimension]
        self.dimension = dimension
        self.input_channels = input_channels
        down = (2 * input_channels, *DOWN_CHANNELS)
        # an up convolution reads the down features of its level plus the up features from below
        up_in = [d + u for d, u in zip(down[1:], (*UP_CHANNELS[1:], 0))]
        levels = len(DOWN_CHANNELS)
        # registration and creation order match upstream: same state-dict order, and a given
        # seed initialises identical weights
        self.downConvs = nn.ModuleList()
        self.upConvs = nn.ModuleList()
        self.batchNorms = nn.ModuleList([batch_norm(UP_CHANNELS[i]) for i in range(levels)])
        for i in range(levels):
            self.downConvs.append(conv(down[i], down[i + 1], kernel_size=3, padding=1, stride=2))
            self.upConvs.append(conv_transpose(up_in[i], UP_CHANNELS[i], kernel_size=4, padding=1, stride=2))
        self.lastConv = conv(down[0] + UP_CHANNELS[0], dimension, kernel_size=3, padding=1)
        nn.init.zeros_(self.lastConv.weight)
        nn.init.zeros_(self.lastConv.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        x = torch.cat([moving, fixed], 1)
        if x.dim() != self.dimension + 2 or x.shape[1] != 2 * self.input_channels:
            raise ValueError(
                f"TallUNet2({self.dimension}-D, {self.input_channels} channel(s)) got moving "
                f"{tuple(moving.shape)} and fixed {tuple(fixed.shape)}")
        if self.dimension == 3 and min(x.shape[2:]) < MIN_SIZE_3D:
            # 3-D average pooling cannot pool a 1-voxel axis, which the 5th level would meet
            raise ValueError(f"TallUNet2 in 3-D needs every spatial axis >= {MIN_SIZE_3D} voxels, "
                             f"got {tuple(x.shape[2:])}")
        skips = []
        for down_conv in self.downConvs:
            skips.append(x)
            y = down_conv(F.leaky_relu(x))
            x = y + _match_channels(self._avg_pool(x, 2, ceil_mode=True), y.shape[1])
        for depth in reversed(range(len(self.upConvs))):
            up = self.upConvs[depth]
            small = x.is_cpu and self.dimension == 3 and x[0, 0].numel() <= SMALL_TRANSPOSED_VOXELS
            y = small_transposed_conv(F.leaky_relu(x), up) if small else _layer(up, F.leaky_relu(x))
            x = y + F.interpolate(_match_channels(x, y.shape[1]), scale_factor=2,
                                  mode=self._interpolation, align_corners=False)
            x = self.batchNorms[depth](x)
            skip = skips[depth]
            x = x[(slice(None), slice(None), *(slice(0, n) for n in skip.shape[2:]))]
            x = torch.cat([x, skip], 1)
        return _layer(self.lastConv, x) / 10
