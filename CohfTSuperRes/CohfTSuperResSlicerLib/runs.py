"""One super-resolution run that ends in the scene: the job taken from the scene, the child process, its progress,
its cancellation, its result.

The one run object of the module: the GUI polls it from a timer, the Logic's process() waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import SimpleITK as sitk

import slicer
from CohfTSuperResLib.options import RunOptions

from .childrun import ChildRun

WAIT_INTERVAL_S = 0.1  # wait() looks at the child (and lets Slicer's GUI work) this often
NOTE_PREFIX = "cohft-sr: note: "


@dataclass
class CohfTSuperResJob:
    """Everything one run needs, taken from the scene on the main thread (the checked images are copies)."""

    checked: object  # CohfTSuperResLib.inference.input_checks.InputCheck
    options: RunOptions  # with the checked scale and slice axis
    t2NodeID: str
    outputNodeID: str | None
    outputName: str
    scene: object

    @property
    def messages(self) -> list[str]:
        """What the library's input check decided (notes) and is concerned about (warnings), one line each."""
        return [*self.checked.notes, *self.checked.warnings]


class SceneRun:
    """One run of a prepared job in a child process (childrun.ChildRun); at its end `finish(job, image)` puts the
    result into the scene (MRML is only touched in poll(), on the main thread). The module's GUI polls it from a
    timer; its Logic's process() waits for it."""

    def __init__(self, job: CohfTSuperResJob, finish: Callable[[CohfTSuperResJob, sitk.Image], object],
                 logCallback: Callable[[str], None] | None = None) -> None:
        self.job, self.finish = job, finish
        self.child = ChildRun(job.checked.t2, job.checked.t1, job.options, logCallback)
        self.outputNode = None
        self.error: BaseException | None = None
        self.finished = False

    @property
    def notes(self) -> list[str]:
        """The child's notes (what the guide check found and which model ran), without their prefix."""
        return [line.removeprefix(NOTE_PREFIX) for line in self.child.messages if line.startswith(NOTE_PREFIX)]

    @property
    def progress(self) -> tuple[int, int]:
        """(slices done, slices in all); (0, 0) until the child's first report."""
        return self.child.done, self.child.total

    def remainingSeconds(self) -> float | None:
        return self.child.remainingSeconds()

    def cancel(self) -> None:
        """Kill the child process now; the next poll() ends the run with InferenceCancelled."""
        self.child.cancel()

    def poll(self) -> bool:
        """True once the run has ended; then outputNode (success) or error is set. Call on the main thread."""
        if self.finished:
            return True
        if not self.child.poll():
            return False
        self.error = self.child.error
        if self.error is None:
            try:
                self.outputNode = self.finish(self.job, self.child.image)
            except Exception as error:  # reported like any other failure of the run
                self.error = error
        self.finished = True
        return True

    def wait(self, timeout: float | None = None, progressCallback: Callable[[int, int], None] | None = None,
             cancelCallback: Callable[[], bool] | None = None) -> bool:
        """Poll until the run ends (True) or `timeout` seconds pass (False), reporting progress and asking whether to
        cancel between polls; Slicer's GUI events are processed meanwhile, so the application stays responsive."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reported = None
        while True:
            finished = self.poll()
            if progressCallback is not None and self.child.total and self.progress != reported:
                reported = self.progress
                progressCallback(*reported)
            if finished:
                return True
            if cancelCallback is not None and cancelCallback():
                self.cancel()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if hasattr(slicer, "app"):
                slicer.app.processEvents()
            time.sleep(WAIT_INTERVAL_S)


def formatSeconds(seconds: float) -> str:
    """'42 s' or '3 min 05 s'."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
