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
