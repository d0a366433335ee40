import numpy as np
import pytest

from modelkit.errors import DTypeError, InputError, InputNameError, ShapeError
from modelkit.spec import Signature, TensorSpec

SIG = Signature(
    inputs=(TensorSpec("image", (None, 8, 8, 1)), TensorSpec("features", (None, 8))),
    outputs=(TensorSpec("probs", (None, 10)),),
)


def feed(batch=2, **over):
    d = {"image": np.zeros((batch, 8, 8, 1), np.float32), "features": np.zeros((batch, 8), np.float32)}
    d.update(over)
    return d


def test_bind_accepts_matching_inputs_and_makes_them_contiguous():
    image = np.zeros((3, 8, 8, 2), np.float32)[..., :1]  # a non-contiguous view
    bound = SIG.bind(feed(3, image=image))
    assert list(bound) == ["image", "features"]
    assert bound["image"].flags["C_CONTIGUOUS"] and bound["image"].shape == (3, 8, 8, 1)


def test_missing_and_unexpected_names_are_named():
    with pytest.raises(InputNameError, match=r"missing \['features'\].*unexpected \['feats'\]"):
        SIG.bind({"image": feed()["image"], "feats": feed()["features"]})


def test_bare_array_for_multi_input_model_is_refused():
    with pytest.raises(InputNameError, match="2 inputs"):
        SIG.bind(np.zeros((1, 8, 8, 1), np.float32))


def test_bare_array_for_single_input_model_is_bound_by_name():
    sig = Signature((TensorSpec("x", (None, 4)),))
    assert list(sig.bind(np.ones((2, 4), np.float32))) == ["x"]


def test_wrong_rank_names_expected_and_received():
    with pytest.raises(ShapeError, match=r"'image': expected rank 4 \(\?, 8, 8, 1\), got rank 3"):
        SIG.bind(feed(image=np.zeros((2, 8, 8), np.float32)))


def test_wrong_fixed_dimension():
    with pytest.raises(ShapeError, match=r"dimension 1 must be 8.*got shape \(2, 9\)"):
        SIG.bind(feed(features=np.zeros((2, 9), np.float32)))


def test_wrong_dtype_names_both_dtypes():
    with pytest.raises(DTypeError, match="expected dtype float32, got float64"):
        SIG.bind(feed(features=np.zeros((2, 8), np.float64)))
    assert issubclass(DTypeError, TypeError) and issubclass(DTypeError, InputError)


def test_batch_sizes_must_agree_between_inputs():
    with pytest.raises(ShapeError, match="batch size 3 differs"):
        SIG.bind(feed(2, features=np.zeros((3, 8), np.float32)))


def test_empty_batch_is_refused():
    with pytest.raises(ShapeError, match="empty tensor"):
        SIG.bind(feed(0))


def test_non_array_is_refused():
    with pytest.raises(DTypeError, match="got str"):
        SIG.bind(feed(features="hello"))


def test_python_lists_are_accepted_with_the_spec_dtype():
    sig = Signature((TensorSpec("x", (None, 2)),))
    assert sig.bind([[1.0, 2.0]])["x"].dtype == np.float32


def test_signature_round_trips_through_dict():
    assert Signature.from_dict(SIG.to_dict()) == SIG
    assert TensorSpec("x", (-1, 3)).shape == (None, 3)


def test_bind_fast_passes_exactly_right_inputs_and_leaves_the_rest_to_bind():
    """predict's fast path: the caller's own dict (no copy) when nothing needs checking or converting; None
    (so bind runs, with its typed errors) for anything else."""
    sig = Signature((TensorSpec("img", (None, 4, 4, 3)), TensorSpec("meta", (None, 2))))
    good = {"img": np.zeros((2, 4, 4, 3), np.float32), "meta": np.zeros((2, 2), np.float32)}
    assert sig.bind_fast(good) is good
    others = [
        {**good, "meta": np.zeros((3, 2), np.float32)},          # batch sizes differ
        {**good, "meta": np.zeros((2, 2), np.float64)},          # a dtype to convert
        {**good, "meta": np.zeros((2, 2), ">f4")},               # big-endian
        {**good, "meta": np.zeros((2, 4), np.float32)[:, ::2]},  # not contiguous
        {**good, "meta": [[0.0, 0.0], [0.0, 0.0]]},              # a list
        {**good, "img": np.zeros((0, 4, 4, 3), np.float32), "meta": np.zeros((0, 2), np.float32)},  # empty
        {"img": good["img"]},                                      # a name missing
        {**good, "extra": good["meta"]},                           # a name too many
        {**good, "img": np.zeros((2, 4, 5, 3), np.float32)},     # a fixed dimension
    ]
    for inputs in others:
        assert sig.bind_fast(inputs) is None
    one = Signature((TensorSpec("x", (None, 3)),))
    x = np.ones((5, 3), np.float32)
    assert one.bind_fast(x)["x"] is x and one.bind_fast(x[None]) is None
    assert Signature((TensorSpec("s", (None, None, 3)),)).bind_fast({"s": np.ones((1, 2, 3), np.float32)}) is None
