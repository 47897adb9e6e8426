"""One super-resolution in a child Python process that runs the library's command line.

Why a child process: Cancel can stop it at once (it is killed, not asked), a stuck run can be ended,
a native crash in torch or ONNX Runtime ends the child and not Slicer, and Slicer's main thread only
polls two small files.

Protocol: the inputs are written into a private temporary folder as NRRD (lossless, geometry in
double precision), then the library's command line ``cohft-sr run --t2 t2.nrrd [--t1 t1.nrrd] -o sr.nrrd
--progress-json ...`` runs there (as ``python -c CLI_ENTRY run ...``). Its stdout goes to
``progress.jsonl`` (one JSON object per progress report), its stderr to ``messages.log`` (the one-line
``cohft-sr: note / warning / error`` messages).
Files, not pipes: the child never blocks on a full pipe and the parent reads them without threads.
The child is started in a process group of its own, so that killing it also kills the Python that
Slicer's launcher (PythonSlicer) starts. Whatever the outcome, the temporary folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

import CohfTSuperResLib
from CohfTSuperResLib.errors import InferenceCancelled, InferenceError, InputError
from CohfTSuperResLib.options import RunOptions

from .text import _

ERROR_PREFIX = "cohft-sr: error: "
# The `cohft-sr` console script, without depending on where pip put it (Slicer has no such script).
CLI_ENTRY = "import sys; from CohfTSuperResLib.cli import main; sys.exit(main(sys.argv[1:]))"


def libraryFolder() -> str:
    """The folder that holds the CohfTSuperResLib package (put on the child's PYTHONPATH)."""
    return str(Path(CohfTSuperResLib.__file__).resolve().parent.parent)


def childPython() -> tuple[str, dict[str, str]]:
    """(Python executable, environment) for the child: Slicer's PythonSlicer launcher with the environment
    Slicer was started with, as the Slicer extensions that run Python processes do; outside Slicer (scripts,
    tests) this interpreter with this environment. The library's folder is put first on PYTHONPATH."""
    import slicer

    python, environment = sys.executable, dict(os.environ)
    if hasattr(slicer, "app"):
        launcher = shutil.which("PythonSlicer")
        if launcher is None:
            raise InferenceError(_("PythonSlicer, Slicer's Python launcher, was not found on the PATH"))
        python, environment = launcher, dict(slicer.util.startupEnvironment())
    paths = [libraryFolder()] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return python, environment


def commandLine(python: str, folder: Path, hasT1: bool, options: RunOptions) -> list[str]:
    """The child's command: the library's `cohft-sr run` on the files in `folder` with the run's options,
    progress as JSON lines."""
    command = [python, "-c", CLI_ENTRY, "run", "--t2", str(folder / "t2.nrrd")]
    if hasT1:
        command += ["--t1", str(folder / "t1.nrrd")]
    return command + ["-o", str(folder / "sr.nrrd"), *options.command_line(), "--progress-json"]


def _startOptions() -> dict:
    """Popen options that give the child a process group of its own (and no console window on Windows)."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _killTree(process: subprocess.Popen) -> None:
    """Kill the child and everything it started, at once."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _removeFolder(folder: Path) -> None:
    """Remove the temporary folder; on Windows a file of a process that just ended may stay locked briefly."""
    for attempt in range(20):
        try:
            shutil.rmtree(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == 19:
                raise
            time.sleep(0.05)


def _abandon(process: subprocess.Popen, folder: Path) -> None:
    """Finaliser: a run that is dropped (or Slicer quitting) leaves no process and no file behind."""
    _killTree(process)
    shutil.rmtree(folder, ignore_errors=True)


class _LineReader:
    """Complete lines appended to a file since the last read (the last, unfinished line is kept for later)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.pending = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.pending = (self.pending + data).split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in complete if line.strip()]

    def rest(self) -> list[str]:
        """Every line left, including an unfinished last one (once the writer has ended)."""
        lines = self.lines()
        if self.pending.strip():
            lines.append(self.pending.decode("utf-8", "replace"))
        self.pending = b""
        return lines


class ChildRun:
    """A running child process: poll() it from a timer (GUI) or wait() for it (scripts); cancel() kills it.

    When finished, exactly one of `image` (the result, a SimpleITK image) and `error` (InferenceCancelled,
    or InferenceError with the child's own message) is set, and the temporary folder is gone.
    """

    def __init__(self, t2: sitk.Image, t1: sitk.Image | None, options: RunOptions,
                 logCallback: Callable[[str], None] | None = None) -> None:
        """Write the inputs into a new temporary folder and start the child with the run's options."""
        self.logCallback = logCallback or (lambda line: None)
        self.done, self.total = 0, 0
        self.messages: list[str] = []
        self.image: sitk.Image | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.startTime = time.monotonic()
        self.endTime: float | None = None
        self._rateStart: tuple[float, int] | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="CohfTSuperRes-"))
        try:
            sitk.WriteImage(t2, str(self.folder / "t2.nrrd"), useCompression=False)
            if t1 is not None:
                sitk.WriteImage(t1, str(self.folder / "t1.nrrd"), useCompression=False)
        except (RuntimeError, OSError) as error:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise InputError(_("cannot write the inputs into the temporary folder {folder}: {error}").format(
                folder=self.folder, error=error)) from error
        python, environment = childPython()
        self.command = commandLine(python, self.folder, t1 is not None, options)
        self._progress = _LineReader(self.folder / "progress.jsonl")
        self._messages = _LineReader(self.folder / "messages.log")
        with open(self.folder / "progress.jsonl", "wb") as stdout, open(self.folder / "messages.log", "wb") as stderr:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                            cwd=self.folder, env=environment, **_startOptions())
        self._finalizer = weakref.finalize(self, _abandon, self.process, self.folder)

    # ---- reading what the child reports ----

    def _read(self, final: bool = False) -> None:
        for line in self._progress.rest() if final else self._progress.lines():
            try:
                report = json.loads(line)
                done, total = int(report["done"]), int(report["total"])
            except (ValueError, KeyError, TypeError):
                self._message(line)  # e.g. 'wrote ...'
                continue
            if self._rateStart is None:
                self._rateStart = (time.monotonic(), done)
            self.done, self.total = done, total
        for line in self._messages.rest() if final else self._messages.lines():
            self._message(line)

    def _message(self, line: str) -> None:
        self.messages.append(line)
        self.logCallback(line)

    def remainingSeconds(self) -> float | None:
        """Estimated seconds left from the rate since the first progress report (None until known)."""
        if self._rateStart is None or self.total == 0:
            return None
        startTime, startDone = self._rateStart
        if self.done <= startDone:
            return None
        rate = (self.done - startDone) / max(time.monotonic() - startTime, 1e-6)
        return (self.total - self.done) / rate

    @property
    def elapsedSeconds(self) -> float:
        return (self.endTime or time.monotonic()) - self.startTime

    # ---- life cycle ----

    def poll(self) -> bool:
        """Read new progress and messages; True once the run has ended (then image or error is set)."""
        if self.finished:
            return True
        self._read()
        if self.process.poll() is None:
            return False
        self._read(final=True)
        try:
            if self.process.returncode == 0:
                self._readResult()
            else:
                self.error = InferenceError(self._failure())
        finally:
            self._end()
        return True

    def _readResult(self) -> None:
        from CohfTSuperResLib.imageio.volumes import read_volume

        try:
            self.image = read_volume(self.folder / "sr.nrrd")
        except InputError as error:
            self.error = InferenceError(
                _("the super-resolution process ended without a readable result: {error}").format(error=error))

    def _failure(self) -> str:
        """The child's own error message, or what is known when it died without one."""
        errors = [line[len(ERROR_PREFIX):] for line in self.messages if line.startswith(ERROR_PREFIX)]
        if errors:
            return errors[0] if len(errors) == 1 else "; ".join(errors)
        code = self.process.returncode
        text = (_("the super-resolution process was killed by signal {signal} without an error message; Slicer is "
                  "unaffected").format(signal=-code) if code < 0 else
                _("the super-resolution process ended with status {status} without an error message; Slicer is "
                  "unaffected").format(status=code))
        last = next((line for line in reversed(self.messages) if line.strip()), None)
        return text if last is None else " ".join([text + ".", _("Its last output: {line}").format(line=last)])

    def _end(self) -> None:
        self.endTime = time.monotonic()
        _removeFolder(self.folder)
        self._finalizer.detach()
        self.finished = True

    def cancel(self) -> None:
        """Kill the child at once and remove its files; the run ends with InferenceCancelled."""
        if self.finished:
            return
        _killTree(self.process)
        self.error = InferenceCancelled(_("super-resolution cancelled: the process was stopped and its files removed"))
        self._end()

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool:
        """Poll until the run ends or `timeout` seconds pass (scripts and tests); True when finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True
