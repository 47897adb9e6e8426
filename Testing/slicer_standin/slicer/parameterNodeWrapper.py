"""TEST-ONLY STAND-IN for Slicer's `slicer.parameterNodeWrapper` (absent from slicer-core).

The decorator leaves the class as it is and the validators only keep their
arguments: enough for CohfTSuperRes.py to import. The parameter node's binding
to the GUI is not exercised here (it needs Qt); see docs/slicer.md.
"""

__all__ = ["Choice", "WithinRange", "parameterNodeWrapper"]


def parameterNodeWrapper(cls):
    return cls


class Choice:
    def __init__(self, choices):
        self.choices = choices


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum = minimum
        self.maximum = maximum
