"""Every choice a caller can make, in one place that imports nothing heavy (no torch, no SimpleITK).

The command line, the inference engine's checks, the backends, evaluation, training and the 3D Slicer
module all read their choices from here, so they can not disagree. Which (variant, scale, T1) models
exist is a fact of the installation, not an option: see ``models_registry.available_models``.
"""

from __future__ import annotations

SCALES = (2, 3, 4)
VARIANTS = ("S", "M", "L")
DEVICES = ("auto", "cpu", "cuda", "mps")  # 'cuda:N' names one GPU of several
BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "bf16", "fp16")
SLICE_AXES = (0, 1, 2)
# Output formats: single files that hold a float32 3-D volume with its geometry, so a result appears
# complete or not at all.
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
