"""Adjustments to ExecuTorch's XNNPACK passes while modelkit lowers a program (modelkit.converters.keras_executorch).

- Softmax takes the logical layout (`softmax_in_logical_layout`): XNNPACK keeps a convolution's output
  channels-last and treated softmax as layout-free, so a softmax over the last axis after a convolution ran over
  the wrong axis.
- Pattern graphs only where they can match (`patterns_only_where_they_can_match`): two of XNNPACK's passes look
  for a subgraph (scaled dot-product attention; bilinear resizing) with pattern graphs that ExecuTorch builds, on
  first use in a process, by exporting and lowering small torch modules: 3-4 s of a quiet machine (twice that
  under load), half of a small model's first lowering. A pattern matches only a graph holding every one of its
  operators, so where the graph lacks one of the operators every pattern of a pass holds, the pass runs with no
  patterns, exactly as it would have found no match. tests/convert/test_xnnpack_passes.py checks these operators
  against the patterns ExecuTorch builds.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator
from unittest import mock


@contextlib.contextmanager
def softmax_in_logical_layout() -> Iterator[None]:
    """XNNPACK keeps a convolution's output channels-last until an op needs the logical (NCHW) layout, and it
    treats softmax as layout-free: a softmax over the last axis of a 4-D tensor whose layout was left
    channels-last (Keras' torch backend: conv, permute to NHWC, softmax, as in every segmentation head) ran over
    the wrong axis (max abs error 0.5-1.0 against aten; executorch 1.5.1). While lowering, softmax is one of the
    ops that take the logical layout, as `view` is: XNNPACK inserts the transpose it needs and still runs it."""
    from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import ChannelsLastTaggedReshapePass
    from executorch.exir.dialects._ops import ops as exir_ops

    ops = ChannelsLastTaggedReshapePass.memory_sensitive_ops_nchw
    softmax = exir_ops.edge.aten._softmax.default
    added = softmax not in ops
    ops.add(softmax)
    try:
        yield
    finally:
        if added:
            ops.discard(softmax)


def pattern_passes() -> list[tuple[Any, Any, str, Any, tuple[Any, ...]]]:
    """(pass class, module holding its pattern builder, the builder's name, what the builder returns when there are
    no patterns, operators every one of its patterns holds) for the XNNPACK passes that match pattern graphs."""
    from executorch.backends.xnnpack._passes.convert_to_sdpa import ConvertToSDPAPass
    from executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d import ConvertToUpsampleBilinear2d
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa
    from executorch.exir.dialects._ops import ops as exir_ops

    aten = exir_ops.edge.aten
    return [(ConvertToSDPAPass, sdpa, "get_graphs", [], (aten._softmax.default, aten.bmm.default)),
            (ConvertToUpsampleBilinear2d, bilinear_2d, "get_graphs_dict", {}, (aten.upsample_bilinear2d.vec,))]


@contextlib.contextmanager
def patterns_only_where_they_can_match() -> Iterator[None]:
    """While lowering: each pattern pass of `pattern_passes` builds its patterns only for a graph that holds
    every operator all of them hold; for any other graph it runs with none (the same result: no match)."""
    with contextlib.ExitStack() as stack:
        for cls, module, builder, none, needed in pattern_passes():
            stack.enter_context(mock.patch.object(cls, "call", _skipping(cls.call, module, builder, none, needed)))
        yield


def _skipping(call: Callable[..., Any], module: Any, builder: str, none: Any,
              needed: tuple[Any, ...]) -> Callable[..., Any]:
    def call_if_it_can_match(self: Any, graph_module: Any) -> Any:
        targets = {node.target for node in graph_module.graph.nodes if node.op == "call_function"}
        if all(op in targets for op in needed):
            return call(self, graph_module)
        with mock.patch.object(module, builder, lambda: none):
            return call(self, graph_module)

    return call_if_it_can_match
