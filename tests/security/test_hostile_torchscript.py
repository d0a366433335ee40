"""TorchScript code that touches files (issue 16, item 4): the archive's code/ is parsed and checked
before torch.jit.load compiles it. A scripted forward calling torch.from_file(path, True, n).fill_()
creates and writes the file on predict in plain torch; modelkit refuses it, naming the call and the
source file, and the trust flag lifts the refusal."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.errors import UnsafeModelError

from ._build import SIG, build_torchscript

torch = pytest.importorskip("torch")


def _scripted(module: "torch.nn.Module", path: Path) -> Path:
    torch.jit.script(module).save(str(path), _extra_files={"modelkit_signature.json": json.dumps(SIG)})
    return path


def _file_writer(canary: Path) -> "torch.nn.Module":
    class Writer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.target = str(canary)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            t = torch.from_file(self.target, True, 4)  # shared=True: creates the file, writes go to it
            t.fill_(1.0)
            return (torch.softmax(x[:, :3] + t.sum() * 0, -1),)

    return Writer()


def test_from_file_writer_is_refused_and_trust_lifts_it(tmp_path):
    canary = tmp_path / "canary"
    path = _scripted(_file_writer(canary), tmp_path / "writer.torchscript.pt")
    # plain torch runs it: load, predict, and the file exists
    torch.jit.load(str(path))(torch.zeros(2, 4))
    assert canary.exists()
    canary.unlink()
    refused = (r"writer\.torchscript\.pt!writer\.torchscript/code/__torch__/.*\.py line \d+: refused to load: "
               r"the TorchScript code calls 'torch\.from_file'.*--trust-unsafe-code")
    with pytest.raises(UnsafeModelError, match=refused):
        modelkit.load(path)
    from modelkit.cli.inspect import describe

    with pytest.raises(UnsafeModelError, match="torch.from_file"):
        describe(str(path))
    assert not canary.exists()
    m = modelkit.load(path, trust_unsafe_code=True)  # the user's own file
    m.predict(np.zeros((2, 4), np.float32))
    assert canary.exists()


def test_custom_op_namespace_is_refused(tmp_path):
    lib = torch.library.Library("mkt_sec", "DEF")  # an operator from outside torch's own namespaces
    lib.define("echo(Tensor x) -> Tensor")
    lib.impl("echo", lambda x: x.clone(), "CPU")

    class Custom(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (torch.ops.mkt_sec.echo(x)[:, :3],)

    path = _scripted(Custom(), tmp_path / "custom.torchscript.pt")
    with pytest.raises(UnsafeModelError, match=r"calls 'ops\.mkt_sec\.echo', which is an operator from namespace "
                                               r"'mkt_sec', outside torch's own"):
        modelkit.load(path)
    assert modelkit.load(path, trust_unsafe_code=True).predict(np.ones((1, 4), np.float32))["probs"].shape == (1, 3)


@pytest.mark.parametrize("source, named", [
    ("def forward(self, x):\n    return torch.save(x, '/tmp/x')\n", "torch.save"),
    ("def forward(self, x):\n    return open('/tmp/x', 'w')\n", "open"),
    ("import os\ndef forward(self, x):\n    return x\n", "import os"),
    ("def forward(self, x):\n    return ops.aten.from_file('/tmp/x', True, 4)\n", "ops.aten.from_file"),
    ("def forward(self, x):\n    return torch.UntypedStorage.from_file('/tmp/x', True, 4)\n",
     "torch.UntypedStorage.from_file"),
])
def test_source_scanner(source, named):
    from modelkit.safety.torchscript import check_torchscript_source

    with pytest.raises(UnsafeModelError) as info:
        check_torchscript_source(source, "m.pt!code/__torch__.py")
    assert f"'{named}'" in str(info.value) and "m.pt!code/__torch__.py line" in str(info.value)


def test_traced_and_scripted_models_still_load(tmp_path):
    traced = build_torchscript(tmp_path / "tiny.torchscript.pt")

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            if x.shape[0] > 1:
                x = torch.nn.functional.relu(x)
            return (torch.softmax(self.lin(x), -1),)

    scripted = _scripted(Plain().eval(), tmp_path / "plain.torchscript.pt")
    for path in (traced, scripted):
        assert modelkit.load(path).predict(np.ones((2, 4), np.float32))["probs"].shape == (2, 3)
