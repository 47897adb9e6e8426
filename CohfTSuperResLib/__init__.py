"""CohfTSuperResLib: guided MR T2 super-resolution with the Cohf-T network.

The library holds every computation (network, LR synthesis, losses, inference,
training, ONNX export, command line); the 3D Slicer module only calls it.
"""

__version__ = "0.1.0"
