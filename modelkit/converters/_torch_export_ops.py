"""Keras' torch-backend ops written again for torch.export, where Keras' own code fixes an open batch or emits an
op ExecuTorch cannot lower. Each is patched into `keras.src.backend.torch` only inside a context manager (around an
export), computes the same numbers, and leaves the cases it does not cover to Keras' own code.

- `take_along_axis`: Keras calls torch.take_along_dim, whose broadcast reads every size as a Python int (nc65);
  `take` along an axis squeezed a result of one id to a scalar (nc151).
- segment reductions (`segment_sum`, `_max`, `_min`, `_prod`): Keras repeats the ids by a tensor computed from the
  data's shape, a size torch cannot know ahead (an unbacked symbol), so the program asserts the traced batch (nc66).
- 1-D `max_pool`, `average_pool`: torch's max_pool1d reads the length as a Python int, fixing an open sequence
  length (nc75); the same pooling as Keras' own 2-D one over a unit height keeps it open.
- "same" padding of a strided convolution or max pooling (`_apply_same_padding`): Keras pads in the op when both
  sides get the same amount, else by hand, a branch on the parity of an open size that torch.export keeps as a
  guard, so the program refused every other size (nc75); the padding is always applied by hand there. Under
  torch.jit.trace (`traced_same_padding`) the amounts are computed from the traced sizes, so a TorchScript trace
  does not bake the traced size's branch either (a strided "same" Conv1D was refused for odd lengths).
- `affine_transform` (a spatial transformer's warp): Keras warps image by image in a Python loop over the batch
  (nc81); written as gathers in modelkit.converters._warp, under torch.jit.trace too. `searchsorted` as comparisons
  and a count (modelkit.converters._search: torch.onnx and ExecuTorch lacked aten.searchsorted, nc82). `cond` on a
  tensor as both branches and a select (nc85: torch.jit.trace had recorded one branch, silently).
- `einsum` of three or more operands: torch.einsum picks its contraction order with opt_einsum from the operands'
  sizes, a choice torch.export keeps as a guard on the batch (nc94: a bilinear score `einsum("bi,ij,bj->b")` fixed
  it: "Constraints violated (batch)"). opt_einsum is off during the export: torch contracts left to right, the same
  sum for every size.
- `gaussian_blur`: Keras sizes its kernel from a tensor of the kernel size (nc157; modelkit.converters._torch_blur).
- `linspace` over a number of points an open dimension gives (nc160: CoordConv; modelkit.converters._torch_linspace).
- `map` over a tensor as torch.vmap, not a loop that fixes the batch (nc161; modelkit.converters._torch_map).
- greedy `ctc_decode` without the frame count read as a number (nc163; modelkit.converters._ctc_greedy), and a size
  used as a value (`ops.full((b,), t)`) made a tensor without fixing it (modelkit.converters._torch_sym_scalars).
- the complex FFTs (`fft`, `fft2`, `ifft2`) as products with the DFT's tables: ExecuTorch does not lower
  aten.complex, TVM's ONNX importer refuses torch.onnx's DFT (nc164; modelkit.converters._complex_dft).
- the random draw of Keras augmentation layers that draw at inference too and use it only when training
  (RandomGrayscale, RandomHue, ...: modelkit.converters._inference_draws; nc98).
- `sort`, `argsort` (ExecuTorch only): aten.sort.stable is not in the Core ATen op set ExecuTorch lowers; nor is
  aten.round.decimals (`round`, to whole numbers: aten.round.default); and torch.quantile (`quantile`, `median`),
  which ExecuTorch has no kernel for (modelkit.converters._torch_quantile); `slice_update` as slice_scatter, whose
  clone the XNNPACK partitioner refused (modelkit.converters._torch_slice_update; nc159).
Splits (an LSTM's or GRU's gates, nc70; `rgb_to_hsv`'s channels, nc78), which ExecuTorch runs only at the traced
batch, are rewritten as slices in the exported graph (_executorch_graph.splits_as_slices), whichever code split.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator


@contextlib.contextmanager
def batch_keeping_ops() -> Iterator[None]:
    """take_along_axis, the segment reductions, affine_transform and einsum without a size that fixes the batch;
    1-D pooling without one that fixes an open length."""
    from unittest import mock

    import torch
    from keras.src.backend.torch import core as torch_core
    from keras.src.backend.torch import image as torch_image
    from keras.src.backend.torch import math as torch_math
    from keras.src.backend.torch import nn as torch_nn
    from keras.src.backend.torch import numpy as torch_numpy

    from ._complex_dft import dft_ops
    from ._ctc_greedy import greedy_ctc_decode
    from ._inference_draws import no_inference_draws
    from ._torch_blur import static_gaussian_blur
    from ._torch_linspace import open_linspace
    from ._torch_map import vmapped_map
    from ._torch_sym_scalars import symbolic_as_tensor

    segments = _segment_reduction(torch_math._segment_reduction_fn)  # noqa: SLF001 - the one function all four call
    take_along_axis = _take_along_axis(torch_numpy.take_along_axis)
    take = _take_unsqueezed(torch_numpy.take)
    # off once: nested (a refusal names the layer by exporting again), the inner flags' exit restored strategy
    # 'auto' with opt_einsum off, which torch refuses ("ValueError: opt_einsum is not enabled ...")
    einsum = torch.backends.opt_einsum.flags(enabled=False) if torch.backends.opt_einsum.enabled \
        else contextlib.nullcontext()
    with traced_alike(), einsum, no_inference_draws(), symbolic_as_tensor(), \
            mock.patch.multiple(torch_numpy, take_along_axis=take_along_axis, take=take,
                                linspace=open_linspace(torch_numpy.linspace)), \
            mock.patch.object(torch_math, "_segment_reduction_fn", segments), \
            mock.patch.multiple(torch_math, **dft_ops(torch_math.fft, torch_math.fft2, torch_math.ifft2)), \
            mock.patch.object(torch_image, "gaussian_blur", static_gaussian_blur(torch_image.gaussian_blur)), \
            mock.patch.object(torch_core, "map", vmapped_map(torch_core.map)), \
            mock.patch.multiple(torch_nn, max_pool=_max_pooling(_pool_1d_as_2d(torch_nn.max_pool)),
                                average_pool=_pool_1d_as_2d(torch_nn.average_pool),
                                _apply_same_padding=_same_padding(torch_nn._apply_same_padding),  # noqa: SLF001
                                ctc_decode=greedy_ctc_decode(torch_nn.ctc_decode, "torch")):
        yield


@contextlib.contextmanager
def traced_alike() -> Iterator[None]:
    """The rewrites torch.export and torch.jit.trace both take: affine_transform as gathers (_warp), searchsorted
    and digitize by counting (_search), cond as a select, IntegerLookup as comparisons (_lookup), TimeDistributed
    as one call (_time_distributed), `custom_gradient` as its forward function, float8 rounding in float32
    (_float8)."""
    from ._float8 import emulated_float8
    from ._lookup import compared_lookups
    from ._search import counted_digitize, counted_searchsorted
    from ._time_distributed import folded_time_steps
    from ._warp import gathered_warps

    with gathered_warps("torch"), counted_searchsorted("torch"), counted_digitize("torch"), _selected_cond(), \
            compared_lookups(), folded_time_steps(), _forward_only_gradients(), emulated_float8():
        yield


def _forward_only_gradients() -> contextlib.AbstractContextManager[None]:
    """`keras.ops.custom_gradient` as its forward function alone: an export computes no gradient, and Keras' torch
    code runs the function inside a torch.autograd.Function, a Python call that torch.jit.save refuses ("Could not
    export Python function call 'CustomGradientFunction'", nc151: every Dense of a model quantized by Keras' own
    `model.quantize("int8")` or "int4"; a user's straight-through rounding too)."""
    from ._keras_patch import backend_patch

    def make(keras_own: Any) -> Any:
        def custom_gradient(forward_fn: Any) -> Any:
            def forward(*args: Any, **kwargs: Any) -> Any:
                result = forward_fn(*args, **kwargs)
                # Keras' contract: (outputs, gradient function); its own code also takes outputs alone
                return result[0] if isinstance(result, tuple) and len(result) == 2 and callable(result[1]) \
                    else result
            return forward
        return custom_gradient

    return backend_patch("torch", "core", "custom_gradient", make)


@contextlib.contextmanager
def traced_same_padding() -> Iterator[None]:
    """For torch.jit.trace: the "same" padding of a strided convolution or max pooling computed from the traced
    sizes (tensor arithmetic the trace records), not baked at the traced size's branch."""
    from unittest import mock

    from keras.src.backend.torch import nn as torch_nn

    with mock.patch.multiple(torch_nn, max_pool=_max_pooling(torch_nn.max_pool),
                             _apply_same_padding=_same_padding(torch_nn._apply_same_padding)):  # noqa: SLF001
        yield


def _selected_cond() -> contextlib.AbstractContextManager[None]:
    """`keras.ops.cond` on a tensor as both branches and a select. Keras' torch code branches in Python (`if pred`):
    torch.jit.trace recorded only the branch the example took, so a TorchScript artifact computed it for every
    input, silently (nc85: `ops.cond(ops.mean(x) > 0, ...)`, parity's samples all took one branch), and
    torch.export failed on the data-dependent branch. The select gives the same values wherever both branches have
    one structure and shape; other branches run Keras' own code (as before: a trace records one branch)."""
    from ._keras_patch import backend_patch

    return backend_patch("torch", "core", "cond", _cond_by_select)


def _cond_by_select(keras_own: Any) -> Any:
    def cond(pred: Any, true_fn: Any, false_fn: Any) -> Any:
        import torch
        from keras import tree

        if not isinstance(pred, torch.Tensor) or pred.device.type == "meta":
            return keras_own(pred, true_fn, false_fn)
        a, b = true_fn(), false_fn()
        fa, fb = tree.flatten(a), tree.flatten(b)
        if len(fa) != len(fb) or any(not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor)
                                     or tuple(x.shape) != tuple(y.shape) for x, y in zip(fa, fb)):
            return keras_own(pred, true_fn, false_fn)  # no select of such branches: Keras' own, as before
        return tree.pack_sequence_as(a, [torch.where(pred, x, y) for x, y in zip(fa, fb)])

    return cond


def traced_vmap_refused() -> contextlib.AbstractContextManager[None]:
    """For torch.jit.trace: `keras.ops.vectorized_map` (torch.vmap), which the tracer cannot record ("Unsupported
    value kind: Tensor", nc83: a deformable sampling layer mapping map_coordinates over the batch), refused typed,
    naming what takes it."""
    from ..errors import UnsupportedConversionError
    from ._keras_patch import backend_patch

    def make(keras_own: Any) -> Any:
        def vectorized_map(function: Any, elements: Any) -> Any:
            try:
                return keras_own(function, elements)
            except RuntimeError as exc:
                raise UnsupportedConversionError(
                    "keras.ops.vectorized_map runs torch.vmap, which torch.jit.trace cannot record; the formats "
                    "exported by torch.export (pt2, executorch) or by TensorFlow (onnx, tflite, saved_model) take "
                    "it") from exc
        return vectorized_map

    return backend_patch("torch", "core", "vectorized_map", make)


_in_max_pool = contextvars.ContextVar("modelkit_in_max_pool", default=False)


def _max_pooling(pool: Any) -> Any:
    """`pool`, marked as a max pooling for _same_padding (Keras names both poolings "pooling" there)."""
    def max_pool(*args: Any, **kwargs: Any) -> Any:
        token = _in_max_pool.set(True)
        try:
            return pool(*args, **kwargs)
        finally:
            _in_max_pool.reset(token)

    return max_pool


def _same_padding(keras_own: Any) -> Any:
    """Keras' torch `_apply_same_padding` without a branch on an open size: a strided convolution's or max
    pooling's "same" padding over a symbolic size is always applied by hand (zeros for a convolution; the edge
    value repeated for a max pooling, as Keras does when the sides differ, which for a max is the same as the
    op's own padding). Keras branches on whether both sides get the same amount, a parity of the size that
    torch.export kept as a guard (nc75: a strided "same" pooling after a length-halving one refused every length
    whose half was odd). Static sizes, stride 1 (padding independent of the size) and average pooling (whose
    numbers differ by branch in Keras) go to Keras' own. Under torch.jit.trace the sizes are Python ints, so
    the amounts are computed from `_shape_as_tensor`, which the trace records."""
    import torch
    from keras.src.backend.torch.nn import _compute_padding_length  # Keras' own amounts, symbolic sizes welcome
    from keras.src.utils.argument_validation import standardize_tuple

    def apply(inputs: Any, kernel_size: Any, strides: Any, data_format: Any, operation_type: str,
              dilation_rate: Any = 1) -> Any:
        spatial = inputs.shape[2:]
        pooling = operation_type == "pooling"
        tracing = torch.jit.is_tracing()
        if ((not tracing and all(isinstance(d, int) for d in spatial)) or all(s == 1 for s in strides)
                or (pooling and not _in_max_pool.get())):
            return keras_own(inputs, kernel_size, strides, data_format, operation_type, dilation_rate)
        dilation = (1,) * len(spatial) if pooling else standardize_tuple(dilation_rate, len(spatial), "dilation_rate")
        if tracing:
            spatial = list(torch._shape_as_tensor(inputs)[2:])  # noqa: SLF001 - the sizes as traced values
        amounts = _traced_padding_length if tracing else _compute_padding_length
        pads: list[Any] = []
        for size, k, s, d in reversed(list(zip(spatial, kernel_size, strides, dilation))):
            pads += amounts(size, k, s, d)
        return torch.nn.functional.pad(inputs, tuple(pads), mode="replicate" if pooling else "constant"), 0

    return apply


def _traced_padding_length(size: Any, kernel: int, stride: int, dilation: int) -> tuple[Any, Any]:
    """Keras' `_compute_padding_length` for a traced size (a 0-d tensor): its `max(0, ...)` as a clamp, since a
    Python comparison would turn the traced size into the traced number."""
    import torch

    total = torch.clamp(((size + stride - 1) // stride - 1) * stride + (kernel - 1) * dilation + 1 - size, min=0)
    left = total // 2
    return left, total - left


def _pool_1d_as_2d(keras_own: Any) -> Any:
    """Keras' torch 1-D pooling as its own 2-D pooling over a unit height (the same windows, the same "same"
    padding, as pool and stride 1 pad nothing): torch's max_pool1d reads the length as a Python int, so an exported
    program ran only at the traced length (nc75: "layer 'max_pooling1d' turns it into the traced size 8"), while
    max_pool2d keeps it symbolic. Inputs of another rank go to Keras' own."""
    from keras.src import backend
    from keras.src.backend.torch.core import convert_to_tensor

    def pool(inputs: Any, pool_size: Any, strides: Any = None, padding: str = "valid", data_format: Any = None) -> Any:
        x = convert_to_tensor(inputs)
        if x.ndim != 3:
            return keras_own(x, pool_size, strides, padding, data_format)
        size = _single(pool_size)
        step = size if strides is None else _single(strides)
        height = 1 if backend.standardize_data_format(data_format) == "channels_last" else 2
        return keras_own(x.unsqueeze(height), (1, size), (1, step), padding, data_format).squeeze(height)

    return pool


def _single(value: Any) -> int:
    """A 1-D pool size or stride given as an int or a 1-tuple."""
    return int(value if isinstance(value, int) else tuple(value)[0])


def _take_along_axis(keras_own: Any) -> Any:
    """Keras' torch `take_along_axis` as gather of explicitly expanded operands (nc65: the top-3 rows by energy,
    `take_along_axis(x, order[:, -3:, None], axis=1)`, failed "Constraints violated (batch)"). A size of 1 that the
    other operand broadcasts is expanded; other sizes are taken as equal (a mismatch fails in gather). Operands of
    different ranks, or no axis, go to Keras' own."""
    import torch
    from keras.src.backend.torch.core import convert_to_tensor

    def take(x: Any, indices: Any, axis: int | None = None) -> Any:
        x, indices = convert_to_tensor(x), convert_to_tensor(indices).long()
        if axis is None or x.ndim != indices.ndim:
            return keras_own(x, indices, axis=axis)
        axis %= x.ndim

        def ones(t: Any, d: int) -> bool:
            return d != axis and isinstance(t.shape[d], int) and t.shape[d] == 1

        x_to = [indices.shape[d] if ones(x, d) else x.shape[d] for d in range(x.ndim)]
        i_to = [x_to[d] if ones(indices, d) else indices.shape[d] for d in range(x.ndim)]
        indices = torch.where(indices < 0, indices + x.shape[axis], indices)  # Keras' "fill" of negative ids
        return torch.gather(x.expand(x_to), axis, indices.expand(i_to))

    return take


def _take_unsqueezed(keras_own: Any) -> Any:
    """Keras' torch `take` along an axis without its `squeeze(axis)` of index_select's result, which Keras reshapes
    right after: over an open number of ids it squeezed a 1-D result of one id to a scalar, a change of rank the
    ExecuTorch runtime refuses ("Attempted to change the tensor rank which is immutable: old=1, new=0", nc151: an
    int8 Embedding quantized by Keras takes its per-row scales from a 1-D table at one token). The embedding lookup
    (a 2-D table along axis 0) and `axis=None` go to Keras' own."""
    import torch
    from keras.src.backend.torch.core import convert_to_tensor

    def take(x: Any, indices: Any, axis: int | None = None) -> Any:
        x = convert_to_tensor(x)
        if axis is None or (x.ndim == 2 and axis % 2 == 0):
            return keras_own(x, indices, axis=axis)
        axis %= x.ndim
        indices = convert_to_tensor(indices).long()
        indices = torch.where(indices < 0, indices + x.shape[axis], indices)  # Keras' "fill" of negative ids
        shape = (*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])
        return torch.index_select(x, axis, indices.reshape(-1)).reshape(shape)

    return take


def _segment_reduction(keras_own: Any) -> Any:
    """Keras' torch segment reduction with the ids expanded over the data's trailing axes (a view), not repeated by
    a tensor count (nc66: a graph network's `segment_sum(messages, dst + graph * nodes, num_segments=batch *
    nodes)` exported as a program that ran only at the traced batch: "Runtime assertion failed for expression
    u0 >= 768"). Ids out of range go to an extra segment that is dropped, as in Keras; a sum is scatter_add (the
    op ExecuTorch's portable kernels have; scatter_reduce, which Keras calls, is missing there). Without `num_segments`
    (its size read from the ids' values) or with ids of another rank than 1, Keras' own."""
    import torch

    def reduce(data: Any, segment_ids: Any, reduction_method: str, num_segments: Any) -> Any:
        if num_segments is None or segment_ids.ndim != 1:
            return keras_own(data, segment_ids, reduction_method, num_segments)
        ids = segment_ids.long().reshape((-1,) + (1,) * (data.ndim - 1)).expand(data.shape)
        ids = torch.where((ids >= 0) & (ids < num_segments), ids, num_segments)
        start = {"amax": -float("inf"), "amin": float("inf"), "prod": 1.0}.get(reduction_method, 0.0)
        result = torch.full((num_segments + 1, *data.shape[1:]), start, device=data.device)
        if reduction_method == "sum":  # scatter_add has an ExecuTorch kernel, scatter_reduce none
            return result.scatter_add(0, ids, data.float())[:-1].type(data.dtype)
        return result.scatter_reduce(0, ids, data.float(), reduction_method)[:-1].type(data.dtype)

    return reduce


@contextlib.contextmanager
def executorch_ops() -> Iterator[None]:
    """Keras' torch `sort` / `argsort` and torch.quantile as topk, `slice_update` as slice_scatter
    (_torch_slice_update), for an export ExecuTorch lowers and runs."""
    from unittest import mock

    import torch
    from keras.src.backend.torch import core as torch_core
    from keras.src.backend.torch import numpy as torch_numpy

    from ._torch_quantile import topk_quantile
    from ._torch_slice_update import scattered_slice_update

    sort, argsort = _sort_as_topk(torch_numpy.sort, torch_numpy.argsort)
    with mock.patch.multiple(torch_numpy, sort=sort, argsort=argsort, round=_round_to_integers(torch_numpy.round)), \
            mock.patch.object(torch, "quantile", topk_quantile(torch.quantile)), \
            mock.patch.object(torch_core, "slice_update", scattered_slice_update(torch_core.slice_update)):
        yield


def _round_to_integers(own_round: Any) -> Any:
    """Keras' torch `round` to whole numbers as torch.round(x): Keras passes `decimals=0`, which torch.export writes
    as aten.round.decimals, not in the Core ATen op set ExecuTorch lowers (nc148: a denoiser answering uint8 pixels);
    aten.round.default is, the same rounding (half to even). Other decimals go to Keras' own."""
    import torch
    from keras.src.backend.torch.core import convert_to_tensor

    def round(x: Any, decimals: int = 0) -> Any:  # noqa: A001 - Keras' name
        x = convert_to_tensor(x)
        if decimals != 0 or not x.is_floating_point():
            return own_round(x, decimals)
        return torch.round(x)

    return round


def _sort_as_topk(own_sort: Any, own_argsort: Any) -> tuple[Any, Any]:
    """Keras' torch `sort` and `argsort` as torch.topk of every element, smallest first: torch.export writes them
    as aten.sort.stable, which is not in the Core ATen op set ExecuTorch lowers ("SpecViolationError"; nc65's
    trimmed-mean pooling), while topk is, and has a portable kernel. The same values; ties (equal values) may
    come in another order, which the parity check would show. Booleans and axis=None go to Keras' own."""
    import torch
    from keras.src.backend.torch.core import cast, convert_to_tensor

    def smallest_first(x: Any, axis: int) -> Any:
        return torch.topk(x, x.shape[axis], dim=axis, largest=False, sorted=True)

    def sort(x: Any, axis: int | None = -1) -> Any:
        x = convert_to_tensor(x)
        return own_sort(x, axis) if axis is None or x.dtype == torch.bool else smallest_first(x, axis).values

    def argsort(x: Any, axis: int | None = -1) -> Any:
        x = convert_to_tensor(x)
        if axis is None or x.dtype == torch.bool:
            return own_argsort(x, axis)
        return cast(smallest_first(x, axis).indices, "int32")

    return sort, argsort
