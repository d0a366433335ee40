"""Models and their versions: loading, warm-up, hot-swap and polling of repository folders.

A source is either one artifact (served as NAME version 1) or a repository folder laid out
NAME/VERSION/<artifact> (the Triton and TF Serving layout; a VERSION folder may itself be a SavedModel).
A new version is loaded and warmed next to the serving one and becomes the default only then;
requests already routed finish on the old one, which is drained and unloaded. A version that fails to
load is recorded (log, metrics, repository index, TF Serving status) and the previous one keeps serving.
Versions are loaded newest first, and one older than the --keep-versions newest loaded is never loaded (it would
be unloaded at once): at startup only the versions served are loaded, and old versions left on disk are not.
Filesystem work (scans, format detection, content keys) and loading run in threads, never on the event
loop; model names from requests are checked against the name pattern before any filesystem lookup.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import FormatError, ModelkitError
from ..formats import MANIFEST_SUFFIX, OPENVINO_XML, Format, check_regular, detect, strip_suffix
from .batcher import Batcher, served_signature
from .errors import ModelNotFound, Unavailable
from .metrics import Metrics

log = logging.getLogger("modelkit.serving")

PLATFORMS = {Format.ONNX: "onnxruntime_onnx", Format.SAVED_MODEL: "tensorflow_savedmodel",
             Format.TORCHSCRIPT: "pytorch_libtorch", Format.KERAS: "keras", Format.TFLITE: "tensorflow_lite",
             Format.TORCH_EXPORT: "pytorch_export", Format.TVM: "tvm", Format.OPENVINO: "openvino"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def valid_name(name: str) -> bool:
    """A model name: letters, digits, '_', '.', '-', starting with a letter or digit (so never '.',
    '..', nor anything with a slash or a NUL)."""
    return _NAME.fullmatch(name) is not None


@dataclass
class ServeConfig:
    max_batch_size: int = 32
    max_delay_ms: float = 2.0
    queue_size: int = 256
    device: str = "cpu"
    threads: int | None = None
    keep_versions: int = 1
    trust_unsafe_code: bool = False  # --trust-unsafe-code: load files that carry code (docs/reliability.md)


@dataclass
class Version:
    name: str
    version: int
    path: Path
    model: Any
    batcher: Batcher
    format: Format

    @cached_property
    def signature(self) -> Any:
        """What requests are checked against and the metadata says: the model's, a fixed batch opened."""
        return served_signature(self.model.signature)

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.format, self.format.value)


@dataclass
class Entry:
    name: str
    root: Path | None  # the repository folder NAME/ (None for a single artifact)
    versions: dict[int, Version] = field(default_factory=dict)
    default: Version | None = None
    failed: dict[int, tuple[tuple, str]] = field(default_factory=dict)  # version -> (content key, reason)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def find_artifact(version_dir: Path) -> Path:
    """The one model artifact inside a VERSION folder (or the folder itself if it is a SavedModel or an OpenVINO
    IR). FIFOs, devices and sockets are refused without being opened, and named in the error."""
    if is_artifact_folder(version_dir):
        return version_dir
    found, refused = [], []
    for p in sorted(version_dir.iterdir()):
        if p.name.startswith(".") or p.name.endswith(MANIFEST_SUFFIX):
            continue
        try:
            check_regular(p)
        except FormatError as exc:
            refused.append(str(exc))
            continue
        try:
            detect(p)
        except ModelkitError:
            continue
        found.append(p)
    if len(found) != 1:
        what = "no model artifact" if not found else f"{len(found)} artifacts ({', '.join(p.name for p in found)})"
        also = f"; refused {'; '.join(refused)}" if refused else ""
        raise ModelNotFound(f"{version_dir}: expected one model artifact, found {what}{also}")
    return found[0]


def content_key(path: Path) -> tuple:
    """What changes when the files of a version change: (path, size, mtime) of every non-folder entry."""
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if not p.is_dir())
    key = []
    for p in files:
        try:
            st = p.stat()
            key.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:  # a dangling link, or removed meanwhile
            key.append((str(p), -1, -1))
    return tuple(key)


def is_artifact_folder(path: Path) -> bool:
    """A folder that is one artifact: a SavedModel, or an OpenVINO IR (model.xml + model.bin)."""
    return (path / "saved_model.pb").is_file() or (path / OPENVINO_XML).is_file()


def is_repository(path: Path) -> bool:
    return path.is_dir() and not is_artifact_folder(path)


class Repository:
    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self.entries: dict[str, Entry] = {}
        self.artifacts: dict[str, Path] = {}  # single-artifact sources: name -> path
        self.roots: list[Path] = []
        self.scanned: set[str] = set()  # model names found in the roots by the last scan

    def add_source(self, spec: str) -> None:
        """'PATH' or 'NAME=PATH': an artifact or a repository folder."""
        name, sep, path_s = spec.partition("=")
        if not sep:
            name, path_s = "", spec
        path = Path(path_s)
        if not path.exists():
            raise ModelNotFound(f"no such file or folder: {path}")
        if is_repository(path):
            if name:
                raise ModelNotFound(f"{path} is a repository folder; NAME=PATH names single artifacts only")
            self.roots.append(path)
            self.scanned |= {d.name for d in _model_dirs(path)}  # at startup, before the loop serves
            return
        detect(path)
        name = name or strip_suffix(path.name).split(".")[0]
        if not valid_name(name) or name in self.artifacts:
            raise ModelNotFound(f"bad or duplicate model name '{name}' for {path}; use NAME=PATH")
        self.artifacts[name] = path

    # -------------------------------------------------------------------------------- lookup

    def get(self, name: str, version: str | int | None = None) -> Version:
        check_name(name)
        entry = self.entries.get(name)
        if entry is None and (name in self.artifacts or name in self.scanned):
            raise Unavailable(f"model '{name}' is still loading")
        if entry is None:
            raise ModelNotFound(f"unknown model '{name}'; serving: {sorted(self.entries) or 'none yet'}")
        if version in (None, ""):
            if entry.default is None:
                raise Unavailable(f"model '{name}' has no version ready yet (still loading, or every version failed)")
            return entry.default
        try:
            v = int(version)
        except ValueError as exc:
            raise ModelNotFound(f"model '{name}': bad version '{version}'") from exc
        if v not in entry.versions:
            raise ModelNotFound(f"model '{name}' has no version {v} loaded; loaded: {sorted(entry.versions)}")
        return entry.versions[v]

    def ready(self) -> bool:
        names = set(self.artifacts) | self.scanned
        return bool(names) and all(n in self.entries and self.entries[n].default is not None for n in names)

    def startup_state(self) -> str:
        """'ready', or which models have no version loaded and why: the line `modelkit serve` prints once the
        first load is done (it said 'ready' while /v2/health/ready answered 503 for a model that failed)."""
        if self.ready():
            return "ready"
        names = sorted(set(self.artifacts) | self.scanned)
        down = [n for n in names if n not in self.entries or self.entries[n].default is None]
        why = [f"'{n}' {next(iter(self.entries[n].failed.values()))[1]}" if n in self.entries and
               self.entries[n].failed else f"'{n}' has no version" for n in down]
        return (f"NOT ready: {len(down)} of {len(names)} model(s) have no version loaded ({'; '.join(why)}); "
                "/v2/health/ready answers 503 until they load (a version is tried again when its files change)"
                if names else "NOT ready: no models found")

    def queue_depths(self) -> dict[tuple[str, ...], float]:
        return {(e.name,): float(sum(v.batcher.pending for v in e.versions.values())) for e in self.entries.values()}

    def index(self) -> list[dict[str, Any]]:
        rows = []
        for e in sorted(self.entries.values(), key=lambda e: e.name):
            for v in sorted(e.versions):
                rows.append({"name": e.name, "version": str(v), "state": "READY",
                             **({"reason": "default"} if e.default and e.default.version == v else {})})
            for v, (_, reason) in sorted(e.failed.items()):
                rows.append({"name": e.name, "version": str(v), "state": "UNAVAILABLE", "reason": reason})
        return rows

    # -------------------------------------------------------------------------------- loading

    async def load_all(self) -> None:
        for name, path in self.artifacts.items():
            await self._load(self._entry(name, None), 1, path)
        if self.roots:
            await self.rescan()

    async def rescan(self, name: str | None = None) -> list[str]:
        """Load new versions of one model (or all) found in the repository folders; returns errors."""
        if name is not None:
            check_name(name)
        loaded = {n: set(e.versions) for n, e in self.entries.items()}
        found = await asyncio.to_thread(_scan, self.roots, name, loaded)
        names = {n for n, _, _ in found}
        if name is None:
            self.scanned = names
        else:
            self.scanned = (self.scanned - {name}) | names
        errors = []
        for model, model_dir, versions in found:
            entry = self._entry(model, model_dir)
            for v, vdir, key in reversed(versions):  # newest first (_scan lists them in ascending order)
                if v in entry.versions or self._retired_at_once(entry, v):
                    continue
                if v in entry.failed and entry.failed[v][0] == key:
                    errors.append(entry.failed[v][1])
                    continue
                err = await self._load(entry, v, vdir, key)
                if err:
                    errors.append(err)
        if name is not None and name not in self.entries:
            raise ModelNotFound(f"no model '{name}' in the repositories {[str(r) for r in self.roots]}")
        return errors

    def _retired_at_once(self, entry: Entry, version: int) -> bool:
        """Whether `version` is older than the --keep-versions newest loaded ones: loaded, it would be unloaded
        at once. Versions retired earlier stay on disk; every scan (each poll) loaded and unloaded them again."""
        return sum(v > version for v in entry.versions) >= max(1, self.config.keep_versions)

    async def poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.rescan()
            except (OSError, ModelkitError) as exc:  # a root removed or unreadable: say so, keep polling
                log.error("scanning the repositories failed: %s", exc)

    def _entry(self, name: str, root: Path | None) -> Entry:
        if name not in self.entries:
            self.entries[name] = Entry(name, root)
        return self.entries[name]

    async def _load(self, entry: Entry, version: int, path: Path, key: tuple = ()) -> str | None:
        async with entry.lock:
            if version in entry.versions or self._retired_at_once(entry, version):  # a concurrent scan loaded newer
                return None
            if key and version in entry.failed and entry.failed[version][0] == key:
                return entry.failed[version][1]  # failed meanwhile (a concurrent rescan), unchanged since
            loop = asyncio.get_running_loop()
            log.info("loading model '%s' version %d from %s", entry.name, version, path)
            try:
                artifact, fmt = await asyncio.to_thread(_resolve, path, entry.root is not None)
                model = await loop.run_in_executor(None, self._load_and_warm, artifact)
            except Exception as exc:  # noqa: BLE001 - any failure of a new version must leave the old one
                # serving; it is logged with its traceback, counted and reported in the index and status.
                reason = f"version {version} failed to load: {type(exc).__name__}: {exc}"
                log.error("model '%s': %s", entry.name, reason, exc_info=not isinstance(exc, ModelkitError))
                entry.failed[version] = (key or await asyncio.to_thread(content_key, path), reason)
                self.metrics.load_failures.inc(entry.name, version)
                return reason
            c = self.config
            batcher = Batcher(model, entry.name, version, self.metrics, c.max_batch_size, c.max_delay_ms, c.queue_size)
            batcher.start()
            entry.failed.pop(version, None)
            entry.versions[version] = Version(entry.name, version, Path(artifact), model, batcher, fmt)
            if entry.default is None or version > entry.default.version:
                if entry.default is not None:
                    self.metrics.swaps.inc(entry.name)
                entry.default = entry.versions[version]
                log.info("model '%s': version %d is now the default", entry.name, version)
            await self._retire(entry)
            return None

    def _load_and_warm(self, artifact: Path) -> Any:
        from ..runtime import load
        from .warmup import warm

        model = load(artifact, device=self.config.device, threads=self.config.threads,
                     trust_unsafe_code=self.config.trust_unsafe_code)
        rows = {1, self.config.max_batch_size} if all(s.shape and s.shape[0] is None
                                                      for s in model.signature.inputs) else {1}
        for n in sorted(rows):
            warm(model, n)
        return model

    async def _retire(self, entry: Entry) -> None:
        keep = sorted(entry.versions, reverse=True)[:max(1, self.config.keep_versions)]
        for v in [v for v in entry.versions if v not in keep]:
            old = entry.versions.pop(v)
            log.info("model '%s': unloading version %d (draining %d requests)", entry.name, v, old.batcher.pending)
            await old.batcher.close()

    async def close(self) -> None:
        for e in self.entries.values():
            for v in list(e.versions.values()):
                await v.batcher.close()


def check_name(name: str) -> None:
    """404 for a name no model can have ('..', '.', 'a/b', NUL...), before any filesystem lookup."""
    if not valid_name(name):
        raise ModelNotFound(f"invalid model name {name[:100]!r}: model names are letters, digits, '_', '.' "
                            "and '-', starting with a letter or digit")


def _resolve(path: Path, in_repository: bool) -> tuple[Path, Format]:
    """The artifact of a version and its format (in a thread: it reads the filesystem)."""
    artifact = find_artifact(path) if in_repository and path.is_dir() else path
    return artifact, detect(artifact)


def _scan(roots: list[Path], name: str | None, loaded: dict[str, set[int]]
          ) -> list[tuple[str, Path, list[tuple[int, Path, tuple]]]]:
    """(model, folder, [(version, folder, content key)]) for every model (or `name`) in the roots; no
    content key for versions already loaded (in a thread: it reads the filesystem)."""
    out = []
    for root in roots:
        for d in _model_dirs(root):
            if name is not None and d.name != name:
                continue
            done = loaded.get(d.name, set())
            out.append((d.name, d, [(v, vd, () if v in done else content_key(vd)) for v, vd in _version_dirs(d)]))
    return out


def _model_dirs(root: Path) -> list[Path]:
    return [p for p in sorted(root.iterdir()) if p.is_dir() and valid_name(p.name)
            and any(c.is_dir() and c.name.isdigit() for c in p.iterdir())]


def _version_dirs(model_dir: Path) -> list[tuple[int, Path]]:
    return sorted((int(c.name), c) for c in model_dir.iterdir() if c.is_dir() and c.name.isdigit())
