"""Ξ, the coordinate-attention layer of CARL (carl.md §2), and the attention kernel it runs on.

Ξ featurizes both images with one shared ConvNet, lets every fixed voxel attend to every
moving voxel (softmax of feature dot products, scale 1, no projections) and returns the
attention-weighted mean of the moving voxels' *coordinates*. Because the values are
coordinates and the features are translation equivariant, shifting the moving image shifts
the answer: Ξ is [W,U]-equivariant for integer translations, away from the borders.

The L×M attention matrix is never materialised: on CUDA the fused SDPA kernels (flash or
memory-efficient) run it; on the CPU :class:`_ChunkedAttention` walks over query blocks and
recomputes each block's probabilities in the backward pass.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from equireg import devices
from equireg.transforms import identity_map
from equireg.wrappers import only_batch_norm_state

DEFAULT_CHUNK_SIZE = 256
VALUE_CHANNELS = 4  # fused GPU kernels want value widths that are multiples of 4
_FUSED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]


# --- the attention kernel --------------------------------------------------------------------

LOG2_E = math.log2(math.e)


def _chunks(length: int, chunk_size: int):
    for start in range(0, length, chunk_size):
        yield start, min(start + chunk_size, length)


def _blocks(batch: int, length: int, chunk_size: int):
    """``(batch slice, row start, row stop)`` of every block, and the blocks' batch size.

    Single-threaded (the workflow's jobs), one batch element at a time keeps a block
    cache-sized: 10-40% faster. With more threads the whole batch goes at once: 1/batch as many
    parallel regions, each a barrier that stalls whenever another process holds a core.
    """
    group = 1 if torch.get_num_threads() == 1 else batch
    blocks = [(slice(first, first + group), start, stop)
              for first in range(0, batch, group) for start, stop in _chunks(length, chunk_size)]
    return blocks, group


def _block(buffer: torch.Tensor, batch: int, rows: int, columns: int) -> torch.Tensor:
    """A contiguous ``[batch, rows, columns]`` view on the front of a reusable flat buffer."""
    return buffer[: batch * rows * columns].view(batch, rows, columns)


def _to_base(query: torch.Tensor, base_2: bool) -> torch.Tensor:
    """Queries whose logits are in base 2 (``Q·log2 e``), or the queries themselves."""
    return query * LOG2_E if base_2 else query


def _exp_(logits: torch.Tensor, base_2: bool) -> torch.Tensor:
    """``2**logits`` or ``e**logits`` in place."""
    return logits.exp2_() if base_2 else logits.exp_()


class _ChunkedAttention(torch.autograd.Function):
    """softmax(Q Kᵀ) V over blocks of ``chunk_size`` query rows (see :func:`_blocks`).

    Peak extra memory is two ``group × chunk × M`` blocks, never ``L × M``. Every pass over a
    block is one batched matmul (MKL) or one in-place elementwise op.

    When the logits are small enough (normalised features at CARL's scale 4), they are shifted
    by the Cauchy–Schwarz bound ``|q_i| max_j |k_j|`` inside the matmul (addmm), which saves
    the row-max pass, and the probabilities are ``exp2`` of base-2 logits ``(Q·log2 e) Kᵀ``:
    the same numbers to float round-off, and exp2 is about 3× cheaper than exp on the CPU.
    Otherwise they are shifted by the exact row maximum, in base e. The forward keeps only the
    output and the per-row log-sum-exp (in the same base); the backward recomputes each block's probabilities from them and gets dQ and
    dK from the same block in one sweep.
    """

    @staticmethod
    def forward(ctx, query, key, value, chunk_size):
        batch, length, _ = query.shape
        columns, channels = key.shape[1], value.shape[2]
        key_t = key.transpose(1, 2)
        # a ones row makes the softmax denominator fall out of the value matmul; [V, 1]ᵀ is
        # stored row-major because MKL is ~4x faster on P·Bᵀ than on P·B for 5 columns
        value_ones_t = torch.cat([value, value.new_ones(batch, columns, 1)], 2).transpose(1, 2).contiguous()
        bound = query.norm(dim=2, keepdim=True) * key.norm(dim=2).amax(1)[:, None, None]
        # shifted by the bound, logits lie in [-2 bound, 0]: every row keeps a normal-float term
        # only if 2 bound <= -log(tiny); past that, shift by the true row maximum
        exact = bool(2 * bound.max() > -math.log(torch.finfo(query.dtype).tiny))
        # base 2 where logits are bounded; huge logits stay in base e, where rounding Q·log2(e)
        # would add an error proportional to them
        base_2 = not exact
        query_b, bound_2 = _to_base(query, base_2), bound * LOG2_E
        output = query.new_empty(batch, length, channels)
        log_sum_exp = query.new_empty(batch, length, 1)
        blocks, group = _blocks(batch, length, chunk_size)
        buffer = query.new_empty(group * min(chunk_size, length) * columns)
        for b, start, stop in blocks:
            q = query_b[b, start:stop]
            scores = _block(buffer, group, stop - start, columns)
            if exact:
                torch.bmm(q, key_t[b], out=scores)
                shift = scores.amax(2, keepdim=True)
                scores.sub_(shift)
            else:
                shift = bound_2[b, start:stop]
                torch.baddbmm(-shift, q, key_t[b], out=scores)
            weighted = torch.bmm(_exp_(scores, base_2), value_ones_t[b].transpose(1, 2))
            total = weighted[:, :, channels:]
            output[b, start:stop] = weighted[:, :, :channels] / total
            log_sum_exp[b, start:stop] = shift + (total.log2() if base_2 else total.log())
        ctx.chunk_size, ctx.base_2 = chunk_size, base_2
        ctx.save_for_backward(query, key, value_ones_t, output, log_sum_exp)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        query, key, value_ones_t, output, log_sum_exp = ctx.saved_tensors
        need_query, need_key, need_value = ctx.needs_input_grad[:3]
        batch, length, _ = query.shape
        columns = key.shape[1]
        query_b = _to_base(query, ctx.base_2)
        key_t = key.transpose(1, 2)
        # dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)) = P ∘ ([dO, −δ] [V, 1]ᵀ): one rank-(c+1) matmul
        delta = (grad_output * output).sum(2, keepdim=True)
        grad_output_delta = torch.cat([grad_output, -delta], 2)
        grad_query = torch.empty_like(query) if need_query else None
        grad_key = torch.zeros_like(key) if need_key else None
        grad_value = query.new_zeros(batch, columns, output.shape[2]) if need_value else None
        rows = min(ctx.chunk_size, length)
        blocks, group = _blocks(batch, length, ctx.chunk_size)
        probabilities_buffer = query.new_empty(group * rows * columns)
        scores_buffer = query.new_empty(group * rows * columns) if need_query or need_key else None
        for b, start, stop in blocks:
            probabilities = _block(probabilities_buffer, group, stop - start, columns)
            torch.baddbmm(-log_sum_exp[b, start:stop], query_b[b, start:stop], key_t[b], out=probabilities)
            _exp_(probabilities, ctx.base_2)
            if need_value:
                grad_value[b].baddbmm_(probabilities.transpose(1, 2), grad_output[b, start:stop])
            if need_query or need_key:
                grad_scores = _block(scores_buffer, group, stop - start, columns)
                torch.bmm(grad_output_delta[b, start:stop], value_ones_t[b], out=grad_scores)
                grad_scores.mul_(probabilities)
                if need_query:
                    torch.bmm(grad_scores, key[b], out=grad_query[b, start:stop])
                if need_key:
                    grad_key[b].baddbmm_(grad_scores.transpose(1, 2), query[b, start:stop])
        return grad_query, grad_key, grad_value, None


def coordinate_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """``softmax(query @ keyᵀ) @ value`` with scale 1, one head, no projections.

    Shapes ``query [B, L, d]``, ``key [B, M, d]``, ``value [B, M, c]`` -> ``[B, L, c]``. On CUDA
    only the fused SDPA kernels may run (never the math kernel, which would materialise L×M);
    elsewhere a chunked kernel over ``chunk_size`` query rows does, with recomputation in the
    backward pass.
    """
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise ValueError("coordinate_attention: query, key and value must be [B, L|M, channels], got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if key.shape[:2] != value.shape[:2] or query.shape[0] != key.shape[0] or query.shape[2] != key.shape[2]:
        raise ValueError(f"coordinate_attention: incompatible shapes query {tuple(query.shape)}, "
                         f"key {tuple(key.shape)}, value {tuple(value.shape)}")
    if chunk_size < 1:
        raise ValueError(f"coordinate_attention: chunk_size must be >= 1, got {chunk_size}")
    # the fused kernels need unit stride along channels; the chunked one reads rows as blocks
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    if query.is_cuda:
        with sdpa_kernel(_FUSED_BACKENDS):
            return F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=1.0)[:, 0]
    return _ChunkedAttention.apply(query, key, value, chunk_size)


# --- the featurizer -----------------------------------------------------------------------------

_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}
DILATIONS = (1, 2, 4)


class Featurizer(nn.Module):
    """Full-resolution ConvNet of Ξ: conv3 (in→C) + ReLU, then 3 residual blocks
    ``x = BN(x); x = x + conv3_d4(relu(conv3_d2(relu(conv3_d1(x)))))``, "same" zero padding.

    Module names follow upstream's ``NoDownsampleNet`` (``convs[0]`` the stem, ``convs[1 + 3k + i]``
    the dilation-``2**k`` conv of block ``i``; ``batchnorms[i]``) so its weights load strictly.
    """

    def __init__(self, dimension: int, channels: int = 128, input_channels: int = 1):
        super().__init__()
        if dimension not in _LAYERS:
            raise ValueError(f"Featurizer: dimension must be 1, 2 or 3, got {dimension!r}")
        conv, batch_norm = _LAYERS[dimension]
        self.dimension = dimension
        self.batchnorms = nn.ModuleList([batch_norm(channels) for _ in range(3)])
        self.convs = nn.ModuleList([conv(input_channels, channels, 3, padding="same")])
        for dilation in DILATIONS:
            for _ in range(3):
                self.convs.append(conv(channels, channels, 3, padding="same", dilation=dilation))

    precision = "fp32"  # of the convolutions (equireg.devices.set_precision); features are float32

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with devices.convolutions(self.precision, image) as layout:
            return self._layers(layout).to(image.dtype).contiguous()

    def _layers(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.convs[0](image))
        for block, norm in enumerate(self.batchnorms):
            x = norm(x)
            y = x
            for level in range(len(DILATIONS)):
                if level:
                    y = torch.relu(y)
                y = self.convs[1 + block + 3 * level](y)
            x = x + y
        return x


# --- Ξ --------------------------------------------------------------------------------------------

def _reverse_groups(batch: torch.Tensor, groups: int) -> torch.Tensor:
    """``batch`` with its ``groups`` equal slices in reverse order: cat(A, B) -> cat(B, A)."""
    return torch.cat(batch.chunk(groups)[::-1])


def padded_identity(shape: tuple[int, ...], padding: int, like: torch.Tensor) -> torch.Tensor:
    """Identity map of a grid of ``shape`` extended linearly by ``padding`` voxels per side:
    padded voxel ``i`` sits at ``(i - padding) / (N - 1)``, so the true grid keeps [0, 1]."""
    axes = [(torch.arange(n + 2 * padding, device=like.device, dtype=like.dtype) - padding) / (n - 1)
            for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


class CoordinateAttention(nn.Module):
    """Ξ: ``forward(moving, fixed) -> displacement [B, D, *S]`` in [0, 1] units.

    Wrap it in :class:`equireg.wrappers.DisplacementField` to get a registration network; the
    state dict of ``DisplacementField(CoordinateAttention(...))`` then matches upstream's
    ``FunctionFromVectorField(AttentionRegistration(NoDownsampleNet()))`` key for key.

    Both images are zero-padded by ``padding`` voxels and featurized by the shared ``net``;
    features are normalised per voxel to length ``feature_scale`` (logits lie in ±scale²).
    Queries are the fixed features cropped back to the image, keys the padded moving features,
    values the moving grid's linearly extrapolated identity map.

    ``featurizer`` replaces the default :class:`Featurizer` (any module ``[B, C, *S] ->
    [B, F, *S]`` that commutes with integer translations keeps Ξ equivariant).
    """

    def __init__(self, dimension: int, feature_channels: int = 128, padding: int = 9,
                 feature_scale: float = 4.0, chunk_size: int = DEFAULT_CHUNK_SIZE, input_channels: int = 1,
                 featurizer: nn.Module | None = None):
        super().__init__()
        if dimension not in _LAYERS:
            raise ValueError(f"CoordinateAttention: dimension must be 1, 2 or 3, got {dimension!r}")
        if padding < 0:
            raise ValueError(f"CoordinateAttention: padding must be >= 0, got {padding}")
        if feature_scale <= 0:
            raise ValueError(f"CoordinateAttention: feature_scale must be > 0, got {feature_scale}")
        self.dimension = dimension
        self.padding = padding
        self.feature_scale = float(feature_scale)
        self.chunk_size = chunk_size
        self.net = featurizer if featurizer is not None else Featurizer(dimension, feature_channels, input_channels)
        self._seen: list[tuple[torch.Tensor, torch.Tensor, list]] | None = None
        self._groups = 1

    @contextmanager
    def sharing_features(self, groups: int = 1) -> Iterator[None]:
        """Within this block an image featurized before is not featurized again, nor is it with its
        ``groups`` batch groups in reverse order.

        GradICON registers A to B and B to A with the same weights, so Ξ would featurize each
        image twice; sharing halves the featurizer's forward and backward work (80 % of a CARL
        step). The result is the same: the features are bitwise equal, the gradient is the sum
        of the two uses either way, and each reuse replays the batch-norm layers on their stored
        inputs so that their running statistics are updated as by a second pass. Only images
        that need no gradient are shared, and only if batch norm is the featurizer's only state.
        With both directions in one batch (``cat(A, B)``, then ``cat(B, A)``; batch norm grouped by
        direction, :func:`equireg.wrappers.batch_norm_groups`) the reuse replays each layer on its
        input with the groups reversed, so that it sees B then A, as the second of two calls would.
        """
        self._seen = [] if only_batch_norm_state(self.net) else None
        self._groups = groups
        try:
            yield
        finally:
            self._seen = None

    def _features(self, padded: torch.Tensor) -> torch.Tensor:
        """Normalised features of a padded image (shared within :meth:`sharing_features`)."""
        sharing = self._seen is not None and not padded.requires_grad
        if sharing:
            candidates = [(padded, False)]
            if self._groups > 1:  # cat(B, A) is seen as cat(A, B) reversed
                candidates.append((_reverse_groups(padded, self._groups), True))
            for image, features, norm_inputs in self._seen:
                for candidate, reverse in candidates:
                    if image.shape != candidate.shape or not torch.equal(image, candidate):
                        continue
                    if self.training:
                        with torch.no_grad():
                            for norm, norm_input in norm_inputs:
                                norm(_reverse_groups(norm_input, self._groups) if reverse else norm_input)
                    return _reverse_groups(features, self._groups) if reverse else features
        norm_inputs: list[tuple[nn.Module, torch.Tensor]] = []
        hooks = [module.register_forward_pre_hook(lambda module, args: norm_inputs.append((module, args[0])))
                 for module in self.net.modules()
                 if sharing and isinstance(module, nn.modules.batchnorm._BatchNorm)]
        try:
            features = self.net(padded)
        finally:
            for hook in hooks:
                hook.remove()
        features = self.feature_scale * features / (0.001 + features.norm(dim=1, keepdim=True))
        if sharing:
            self._seen.append((padded, features, norm_inputs))
        return features

    def featurize(self, image: torch.Tensor, crop: bool) -> torch.Tensor:
        """Normalised features of ``image`` on its padded grid, or cropped back to it."""
        p = self.padding
        features = self._features(F.pad(image, [p, p] * self.dimension))
        if crop and p:
            features = features[(slice(None), slice(None)) + (slice(p, -p),) * self.dimension]
        return features

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if moving.shape != fixed.shape or moving.dim() != self.dimension + 2:
            raise ValueError(f"CoordinateAttention({self.dimension}-D): moving {tuple(moving.shape)} and "
                             f"fixed {tuple(fixed.shape)} must be equal [B, C, *spatial] shapes")
        shape = tuple(fixed.shape[2:])
        if min(shape) < 2:
            raise ValueError(f"CoordinateAttention: every spatial axis needs >= 2 voxels, got {shape}")
        batch = fixed.shape[0]
        keys = self.featurize(moving, crop=False).flatten(2).transpose(1, 2)
        queries = self.featurize(fixed, crop=True).flatten(2).transpose(1, 2)
        grid = padded_identity(shape, self.padding, fixed).flatten(2).transpose(1, 2)
        values = grid[:, :, [i % self.dimension for i in range(VALUE_CHANNELS)]]
        values = values.expand(batch, -1, -1)
        coordinates = coordinate_attention(queries, keys, values, self.chunk_size)[:, :, : self.dimension]
        coordinates = coordinates.transpose(1, 2).reshape(batch, self.dimension, *shape)
        return coordinates - identity_map(shape, fixed.device, fixed.dtype)
