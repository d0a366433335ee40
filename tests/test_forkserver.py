"""modelkit._forkserver: the second child of an environment onwards is forked from a warm server of it, and behaves
as a spawned child does (result, errors, exit codes, timeouts, temporary files, folder, the user's modules)."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from modelkit import _child, _forkserver
from modelkit.errors import WorkerError

HERE = "tests.test_forkserver"


# --- run in the child ------------------------------------------------------------------------------------------
def whoami(module: str | None = None) -> dict:
    import tempfile

    out = {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "tmp": tempfile.gettempdir(),
           "marker": os.environ.get("MODELKIT_TEST_MARK"), "session": os.getsid(0) == os.getpid(),
           "keras": "keras" in sys.modules, "umask": os.umask(0o022)}
    if module:
        out["module"] = __import__(module).VALUE
    return out


def stop_cleanly(path: str) -> None:
    """Work that stops cleanly on Ctrl-C (as training saves its checkpoint), saying so in a typed error."""
    from modelkit.errors import TrainingError

    Path(path).write_text(f"started {os.getppid()}")
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        Path(path).write_text(f"stopped cleanly {os.getppid()}")
        raise TrainingError("interrupted; checkpoint saved") from None


class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def add(self, k: int) -> dict:
        self.n += k
        return {"n": self.n, "pid": os.getpid(), "ppid": os.getppid()}


# --- the tests -------------------------------------------------------------------------------------------------
@pytest.fixture
def own_env(monkeypatch):
    """An environment no other test uses: its first child is spawned, the next ones forked by its own server."""
    monkeypatch.setenv("MODELKIT_TEST_MARK", uuid.uuid4().hex)
    monkeypatch.delenv(_forkserver.ENV_SWITCH, raising=False)
    yield os.environ["MODELKIT_TEST_MARK"]
    key = frozenset((k, v) for k, v in _child.child_env().items() if k not in _forkserver.PER_CHILD)
    server = _forkserver._servers.pop(key, None)
    if server is not None:
        server.close()


def test_the_second_child_of_an_environment_is_forked_and_sees_its_own_folder_env_and_session(own_env, tmp_path,
                                                                                             monkeypatch):
    first = _child.run(f"{HERE}:whoami", {})
    assert first["ppid"] == os.getpid()  # a new Python, this process's child
    monkeypatch.chdir(tmp_path)
    before = os.umask(0o027)  # changed after the server started: the child has this one
    try:
        second, third = (_child.run(f"{HERE}:whoami", {}) for _ in range(2))
    finally:
        os.umask(before)
    assert second["ppid"] == third["ppid"] != os.getpid()  # both forked by the same server
    assert second["pid"] != third["pid"]
    for got in (second, third):
        assert got["cwd"] == str(tmp_path) and got["marker"] == own_env and got["session"] and got["umask"] == 0o027
        assert "modelkit-child-" in got["tmp"]  # its own scratch folder (TMPDIR), not the server's


@pytest.mark.slow
def test_a_server_of_a_keras_backend_has_imported_keras_before_the_fork(own_env):
    children = [_child.run(f"{HERE}:whoami", {}, backend="torch") for _ in range(2)]
    assert not children[0]["keras"] and children[1]["keras"]  # spawned: nothing yet; forked: imported


def test_a_child_of_no_backend_gets_a_server_that_imported_no_keras(own_env, monkeypatch):
    """A TVM or ONNX child (no backend) inherits KERAS_BACKEND from a parent that imported Keras: its server still
    imports none (TensorFlow's LLVM beside TVM's is not what a spawned child of it has either)."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    children = [_child.run(f"{HERE}:whoami", {}) for _ in range(2)]
    assert children[1]["ppid"] != os.getpid() and not children[1]["keras"]


def test_the_users_folder_reaches_a_forked_child(own_env, tmp_path, monkeypatch):
    """PYTHONPATH is per child: the user's folder (of a model file) is put on the forked child's sys.path."""
    folder = tmp_path / "mine"
    folder.mkdir()
    name = f"user_mod_{own_env[:8]}"
    (folder / f"{name}.py").write_text("VALUE = 42\n")
    _child.run(f"{HERE}:whoami", {})
    monkeypatch.setenv("PYTHONPATH", str(folder))
    got = _child.run(f"{HERE}:whoami", {"module": name})
    assert got["ppid"] != os.getpid() and got["module"] == 42


def test_a_forked_child_that_dies_or_overruns_is_reported_as_a_spawned_one_is(own_env):
    _child.run(f"{HERE}:whoami", {})
    with pytest.raises(WorkerError, match=r"^the work died in its child process \(exit code 7\)"):
        _child.run("tests.test_child:die", {"code": 7}, what="the work")
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"^the work did not finish within 2 s$"):
        _child.run("tests.test_child:sleep", {"seconds": 120}, timeout=2, what="the work")
    assert time.monotonic() - t0 < 60


def test_a_served_object_lives_in_a_forked_child(own_env):
    env = _child.child_env()
    first = _child.serve(f"{HERE}:Counter", {"start": 1}, env=env)
    second = _child.serve(f"{HERE}:Counter", {"start": 10}, env=env)
    try:
        assert first.call("add", {"k": 2})["n"] == 3
        got = second.call("add", {"k": 5})
        assert got["n"] == 15 and got["ppid"] != os.getpid()
    finally:
        first.stop()
        second.stop()
    assert not second.alive()


def test_without_its_server_a_child_is_spawned_again(own_env):
    _child.run(f"{HERE}:whoami", {})
    forked = _child.run(f"{HERE}:whoami", {})
    os.kill(forked["ppid"], signal.SIGKILL)  # the server, gone
    got = _child.run(f"{HERE}:whoami", {})  # a new server, or a new Python: either way it runs
    assert got["pid"] != forked["pid"] and got["ppid"] != forked["ppid"]


def test_the_switch_turns_it_off(own_env, monkeypatch):
    monkeypatch.setenv(_forkserver.ENV_SWITCH, "0")
    assert {_child.run(f"{HERE}:whoami", {})["ppid"] for _ in range(3)} == {os.getpid()}


def test_ctrl_c_reaches_a_forked_child_which_stops_cleanly(own_env, tmp_path, python_sigint):
    """The parent's Ctrl-C is passed on to the forked child by pid (modelkit._child.run), as to a spawned one."""
    from modelkit.errors import TrainingError

    _child.run(f"{HERE}:whoami", {})
    mark = tmp_path / "mark.txt"

    def ctrl_c_once_started() -> None:
        end = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < end:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_started, daemon=True).start()
    with pytest.raises(TrainingError, match="^interrupted; checkpoint saved$"):
        _child.run(f"{HERE}:stop_cleanly", {"path": str(mark)}, error=TrainingError, interrupt_grace=30)
    said, ppid = mark.read_text().rsplit(" ", 1)
    assert said == "stopped cleanly" and int(ppid) != os.getpid()  # a forked child, stopped by its own handler
