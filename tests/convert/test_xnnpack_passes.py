"""XNNPACK's pattern passes while lowering to executorch (modelkit.converters._xnnpack_passes): the pattern graphs,
which ExecuTorch builds by exporting small modules on first use (3-4 s), are built only for a graph that can match
them, and the operators that decide it are in every pattern ExecuTorch builds."""
import importlib.util

import pytest

from modelkit import _child

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                reason="executorch is not installed (pip install 'modelkit[executorch]')")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    return _child.run("tests.convert.pattern_models:convert_in_order",
                      {"folder": str(tmp_path_factory.mktemp("patterns")), "kinds": ["cnn", "resize", "attention"]},
                      backend="torch")


@pytest.mark.slow
def test_a_model_without_attention_or_resizing_builds_no_pattern(converted):
    assert converted["cnn"]["built"] == {"sdpa": 0, "bilinear": 0}
    assert converted["cnn"]["max_abs"] <= 1e-5


@pytest.mark.slow
def test_a_bilinear_resize_builds_the_resizing_patterns_where_xnnpack_takes_the_resize(converted):
    """Under modelkit's open batch XNNPACK leaves the resize to the portable kernel (nothing to match); at a fixed
    size it takes it, and the resizing patterns are built."""
    assert converted["resize"]["built"] == {"sdpa": 0, "bilinear": 0}
    assert converted["resize"]["max_abs"] <= 1e-4
    assert converted["fixed"]["resize"] == {"sdpa": 0, "bilinear": 1}


@pytest.mark.slow
def test_attention_builds_the_attention_patterns_where_xnnpack_takes_softmax_and_matmuls_together(converted):
    """Under the open batch XNNPACK takes attention's softmax and its matmuls in separate parts (its own choice:
    not asserted); at a fixed size it takes them together, and the attention patterns are built."""
    assert converted["attention"]["max_abs"] <= 1e-4
    assert converted["fixed"]["attention"] == {"sdpa": 1, "bilinear": 1}


@pytest.mark.slow
def test_every_pattern_executorch_builds_holds_the_operators_that_decide_it(converted):
    assert converted["missing"] == []
