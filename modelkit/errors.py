"""Typed errors. Library code raises these; only the CLI turns them into exit codes.

Errors caused by the user's input derive from ValueError as well, so generic callers
that already catch ValueError keep working.
"""
from __future__ import annotations

from typing import Iterator

KERAS_CALL_FAILED = "Exception encountered when calling"  # how Keras wraps the error a layer's call() raised


class ModelkitError(Exception):
    """Base class of every error modelkit raises on purpose."""


class FormatError(ModelkitError, ValueError):
    """A path is not a model file of a known format, or not of the format claimed."""


class LoadError(ModelkitError, ValueError):
    """An artifact exists but could not be loaded (corrupt, truncated, wrong engine)."""


class LayerCallError(LoadError):
    """Keras could not run a layer while rebuilding the model under this process's backend (a layer written for
    another backend); a route of another backend may still load it (modelkit.converters.routes)."""


class UnsafeModelError(ModelkitError, ValueError):
    """A model file asks for code execution or unsafe paths; refused before anything ran."""


class EngineNotInstalledError(ModelkitError):
    """The engine a format needs is not installed; the message names the pip extra."""


class InputError(ModelkitError, ValueError):
    """Inputs handed to a model do not match its Signature."""


class InputNameError(InputError, KeyError):
    """Missing or unexpected input names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ShapeError(InputError):
    """Wrong rank or a wrong fixed dimension."""


class DTypeError(InputError, TypeError):
    """Wrong dtype for an input."""


class ConversionError(ModelkitError):
    """A converter edge failed."""


class UnsupportedConversionError(ConversionError, ValueError):
    """No chain of converter edges leads from the source format to the target."""


class RouteNotApplicableError(UnsupportedConversionError):
    """A route found, once the model was loaded, that it is not for this model (the recurrent routes, given a model
    whose custom layers hold no recurrent layer): the next route runs, and the route is left out of the reasons a
    failed conversion gives (it is kept in the manifest's extra.route.tried)."""


class FixedShapeError(UnsupportedConversionError):
    """A library of fixed shapes (a TVM batch fixed by --batch or tuning) asked of a model with an open non-batch
    dimension (an image of any size, a sequence of any length): it compiles with a dynamic batch, untuned."""


class ArtifactExistsError(ModelkitError, FileExistsError):
    """Refusing to overwrite an existing artifact without force=True / --force."""


class OutputPathError(ModelkitError, OSError):
    """An output cannot be written where asked: a parent is a file, no permission, a read-only disk."""


class ReportedError(ModelkitError):
    """An error that carries a `.report` (a parity report, optimize's closest candidates), kept when a child's
    error is rebuilt in the parent or a summary retypes it (retyped)."""

    def __init__(self, message: str, report: object = None):
        super().__init__(message)
        self.report = report


class ParityError(ReportedError):
    """An artifact's outputs differ from its source's by more than the edge's tolerance."""


class VacuousParityError(ParityError):
    """The reference outputs barely change with the inputs, so a parity check would prove nothing."""


class AccuracyError(ParityError):
    """A lossy (quantized) artifact's accuracy on labelled data drops more than the allowed maximum."""


class SourceRouteError(ConversionError, ReportedError):
    """A hop cannot take the artifact the route before it made, and another route of that hop takes the model
    (OpenVINO and tf2onnx's recurrent Loop: torch.onnx's export converts); `.report["route"]` names it. convert
    takes that route by itself when the user did not pick the first one."""


class BackendError(ModelkitError, ValueError):
    """An unknown Keras backend, or work that needs a backend other than the loaded one."""


class TrainingError(ModelkitError):
    """Training could not run (unknown model, data set or optimizer; data of the wrong shape)."""


class WorkerError(ModelkitError):
    """A child process modelkit ran work in died, ran out of time, or failed with an error not modelkit's."""


class TuningInterrupted(ModelkitError):
    """Tuning was stopped by Ctrl-C; the records measured so far are kept and the next run resumes."""


class RemoteDeviceError(ModelkitError, ValueError):
    """Tuning on a device over TVM RPC cannot start: a bad HOST:PORT, a tracker that does not answer, or no
    free device registered under the key; the message names them and the command to run."""


class ManifestError(LoadError):
    """A manifest beside an artifact is not valid JSON or does not match the manifest schema."""


class ResourceError(ModelkitError, MemoryError):
    """The machine ran out of a resource (memory) for this work; the message says how much was needed."""


class UserCodeError(ModelkitError):
    """The user's own Python file (a model builder, an imported module) raised; the message names the
    file and line, and --debug shows the traceback."""


class SourceRefusedError(UnsupportedConversionError):
    """What refuses the source itself, for every route and format: a conversion (and every build of
    `optimize`) stops at once instead of trying the next route."""


class UnregisteredClassError(SourceRefusedError):
    """The model uses a custom class no imported module registers: no route nor format can rebuild it, so a
    conversion stops at once (the message names --import)."""


class RandomModelError(SourceRefusedError):
    """The model answers differently on the same inputs (random draws at inference): no artifact can be checked
    against it (the message names the outputs that vary, and how to keep those that do not)."""


class OptimizeError(ReportedError):
    """`modelkit optimize` cannot pick an artifact: no candidate meets the limits (the message lists the closest
    and what each missed by; `.report` holds the same), or its inputs are wrong."""


def chained(exc: BaseException, limit: int = 16) -> Iterator[BaseException]:
    """`exc`, then the errors it was raised from (each one's __cause__, then __context__), breadth first, each once,
    at most `limit`."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < limit:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def first_line(exc: BaseException) -> str:
    """An error's first line for a one-line message (its type's name when it says nothing); for Keras'
    "Exception encountered when calling X.call()." the reason too, which Keras puts on the next line. Terminal
    escape codes (Keras writes the reason in bold) are dropped, and so are OpenVINO's lines that only say where in
    its sources the error passed ("Exception from src/inference/src/cpp/core.cpp:84:"), and torch.export's "The error
    above occurred when calling torch.export.export. ..." (all a GuardOnDataDependentSymNode says: its name is kept).
    A first line that ends with a colon (TVM's "LLVM module verification failed with the following errors:") keeps the
    line it introduces."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    stripped = (ln.strip() for ln in text.splitlines())
    lines = [ln for ln in stripped if ln and not ln.startswith("The error above occurred when calling torch.export")]
    said = [ln for ln in lines if not re.fullmatch(r"Exception from \S+:\d+:?", ln)]
    lines = said or lines
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and (lines[0].startswith(KERAS_CALL_FAILED) or lines[0].endswith(":")):
        return f"{lines[0]} {lines[1]}"  # a line that introduces what follows ("... failed with the following errors:")
    return lines[0]


def retyped(cls: type[ModelkitError], message: str, report: object = None) -> ModelkitError:
    """An error of modelkit type `cls` with `message` (and a ReportedError's `report`), built without calling
    `cls.__init__`, whose signature varies: a child's error rebuilt in the parent, or a summary of failures."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    if isinstance(exc, ReportedError):
        exc.report = report
    return exc
