"""Run `python -m modelkit` as a terminal would, and Ctrl-C it."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Iterator


def sigint_default() -> None:
    """preexec_fn for a process that a test Ctrl-C's: a shell's background job (nohup, `cmd &`, some CI
    runners) starts with SIGINT ignored, and the process would inherit that; a terminal's does not."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def cli_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`python -m modelkit ARGS` in its own process group, output captured (text, stderr merged), as a
    terminal would start it; whatever the test does, the group is killed at the end. `env`: extra variables."""
    proc = subprocess.Popen([sys.executable, "-m", "modelkit", *args], start_new_session=True,
                            env={**os.environ, **env} if env else None,
                            preexec_fn=sigint_default, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def ctrl_c(proc: subprocess.Popen, timeout: float) -> str:
    """Send what a terminal's Ctrl-C sends (SIGINT to the foreground group); return the rest of the output."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=timeout)[0]


# The `modelkit` console script: sys.path starts with the script's bin folder, not the working folder
# (unlike `python -m modelkit`), which is what a user's own modules in their folder meet.
_SCRIPT = "import sys; del sys.path[0]; sys.argv[0] = 'modelkit'; from modelkit.cli import main; main()"


def modelkit_script(*args: str, cwd: str | os.PathLike, timeout: float = 300,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `modelkit ARGS` as the installed console script runs, in the user's folder `cwd`; output captured.
    `env`: the whole environment (default: this process's)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = os.environ if env is None else env
    env = {**base, "PYTHONPATH": os.pathsep.join(p for p in (root, base.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", _SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(args: list[str]) -> str:
    """Run the CLI in-process (CliRunner); it must exit 2 with exactly one line, `error: ...`; return that line."""
    from click.testing import CliRunner

    from modelkit.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output[-3000:]
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output[-3000:]
    return lines[0]
