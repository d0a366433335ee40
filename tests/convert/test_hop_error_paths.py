"""A candidate that fails while it is checked (ExecuTorch's "failed running this program" on a Keras GRU) is named
in the error as the artifact asked for, "(not written)", not by the partial folder it was checked in, which the
hop removes (was: '../.mymodel.pte.8147.nx0av6pz.partial/mymodel.pte: ExecuTorch failed running ...')."""
import pytest

from modelkit.converters.hop import run_hop
from modelkit.errors import LoadError

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")


def test_a_candidate_that_fails_is_named_as_asked_not_by_its_partial_folder(tiny_onnx, tmp_path, monkeypatch):
    import modelkit.runtime as rt

    real = rt.load

    def failing(path, *args, **kwargs):
        model = real(path, *args, **kwargs)
        if ".partial" in str(path):
            def boom(*_a, **_k):
                raise LoadError(f"{path}: the engine failed running this program")
            monkeypatch.setattr(model, "predict", boom)
        return model

    monkeypatch.setattr(rt, "load", failing)
    dest = tmp_path / "out" / "tiny_openvino"
    dest.parent.mkdir()
    with pytest.raises(LoadError) as info:
        run_hop(str(tiny_onnx), str(dest), "onnx", "openvino")
    assert str(info.value) == f"{dest} (not written): the engine failed running this program"
    assert not list(dest.parent.iterdir())  # nothing written, no partial folder left
