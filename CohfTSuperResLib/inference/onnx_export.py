"""ONNX export of a Cohf-T network and its execution with ONNX Runtime.

The exported graph maps (lr (B,1,h,w), t1 (B,1,s*h,s*w)) to the SR image
(B,1,s*h,s*w) (the gradient head is dropped); batch and spatial sizes are
dynamic, with h and w multiples of `input_multiple(config)` and at least
`size_multiple(config)` (6 and 30 for the shipped variants): the inference
engine pads every slice that way for both backends, and the inter-modality
attention pads its token map inside the graph (batching.py). The network's config is
stored in the model's metadata. ONNX Runtime uses the CUDA execution provider
when onnxruntime-gpu is installed and a GPU is visible, the CPU one otherwise.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from CohfTSuperResLib.inference.batching import input_multiple, size_multiple
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.model import CohfTNet
from CohfTSuperResLib.inference.onnx_cache import EXPORT_PACKAGES, RUNTIME_PACKAGES, cached_path, is_trusted, record
from CohfTSuperResLib.weights.storage import CONFIG_KEY, WeightsError, config_of

MAX_LR_SIDE = 30000  # largest exported side, in LR samples


class _ImageOnly(torch.nn.Module):
    """The network with its SR image as only output."""

    def __init__(self, network: CohfTNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, lr: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        return self.network.super_resolve_image(lr, t1)


def _require(modules: tuple[str, ...], purpose: str) -> None:
    """InputError naming the package to install when one of `modules` is missing."""
    for module in modules:
        try:
            __import__(module)
        except ImportError as error:
            raise InputError(
                f"{purpose} needs the '{module}' package: pip install {module} (or 'CohfTSuperResLib[onnx]', "
                "[gpu] for onnxruntime-gpu)"
            ) from error


def export_onnx(network: CohfTNet, path: str | Path, opset: int | None = None) -> Path:
    """Write the network as an ONNX model with dynamic batch and spatial sizes; return the path."""
    _require(RUNTIME_PACKAGES + EXPORT_PACKAGES, "exporting to ONNX")
    import onnx

    config = network.config
    multiple, minimum = input_multiple(config), size_multiple(config)
    side = minimum + multiple  # the example's sizes are not multiples of the attention's, so nothing specialises
    batch = torch.export.Dim("batch", min=1, max=4096)
    rows = torch.export.Dim("row_blocks", min=minimum // multiple, max=MAX_LR_SIDE // multiple)
    cols = torch.export.Dim("col_blocks", min=minimum // multiple, max=MAX_LR_SIDE // multiple)
    lr = torch.rand(2, 1, side, side + multiple)
    shapes: dict[str, dict[int, object]] = {"lr": {0: batch, 2: multiple * rows, 3: multiple * cols}}
    args: tuple[torch.Tensor, ...] = (lr,)
    if config.use_t1:
        step = multiple * config.scale
        args += (torch.rand(2, 1, config.scale * side, config.scale * (side + multiple)),)
        shapes["t1"] = {0: batch, 2: step * rows, 3: step * cols}
    wrapper = _ImageOnly(network.float().cpu().eval())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper, args, dynamo=True, dynamic_shapes=shapes, input_names=list(shapes), output_names=["sr"],
            opset_version=opset, external_data=False, verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config.to_dict())
    onnx.save(proto, str(temporary))
    temporary.replace(path)
    return path


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a logger below ERROR for the duration (the exporter logs notes about optional packages)."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


def cached_export(network: CohfTNet, key: str) -> Path:
    """ONNX file of the network, exported once per key (the weights' sha256) and reused while its recorded digest
    matches (onnx_cache.py); a damaged or replaced cache file is exported again."""
    path = cached_path(key)
    if not is_trusted(path):
        export_onnx(network, path)
        record(path)
    return path


def onnx_providers(device: str) -> list[str]:
    """Execution providers for a device name: 'auto' prefers CUDA, 'cpu' forces CPU, 'cuda' requires it."""
    _require(RUNTIME_PACKAGES, "the ONNX backend")
    import onnxruntime

    available = onnxruntime.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if not has_cuda:
            raise InputError(
                f"device {device!r} with the ONNX backend needs onnxruntime-gpu (pip install 'CohfTSuperResLib[gpu]'); "
                f"this onnxruntime offers {', '.join(available)}"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"the ONNX backend runs on 'auto', 'cpu' or 'cuda', not {device!r}")


class OnnxRunner:
    """An exported Cohf-T model in an ONNX Runtime session: (lr, t1) tensors -> SR tensor on the CPU."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        _require(RUNTIME_PACKAGES, "the ONNX backend")
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"ONNX model not found: {path}")
        providers = onnx_providers(device)
        try:
            options = onnxruntime.SessionOptions()
            options.enable_cpu_mem_arena = False  # hand activations back after each batch, as torch does
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception classes, unrelated to Python's
            raise WeightsError(f"cannot load ONNX model {path.name}: {error}") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in metadata:
            raise WeightsError(f"{path.name} holds no Cohf-T configuration; export it with `cohft-sr export-onnx`")
        try:
            stored = json.loads(metadata[CONFIG_KEY])
        except json.JSONDecodeError as error:
            raise WeightsError(f"{path.name} has a Cohf-T configuration that is not JSON: {error}") from error
        self.config = config_of({CONFIG_KEY: stored}, path.name)
        self.inputs = [node.name for node in self.session.get_inputs()]
        self._probe(path.name)

    def _probe(self, name: str) -> None:
        """WeightsError when the model gives NaN / Inf on a small plausible input (damaged or poisoned weights)."""
        side = size_multiple(self.config)
        generator = torch.Generator().manual_seed(0)
        lr = torch.rand(1, 1, side, side, generator=generator)
        t1 = torch.rand(1, 1, self.config.scale * side, self.config.scale * side, generator=generator)
        try:
            output = self(lr, t1 if self.config.use_t1 else None)
        except Exception as error:  # onnxruntime raises its own exception classes
            raise WeightsError(f"ONNX model {name} does not run: {error}") from error
        if not torch.isfinite(output).all():
            raise WeightsError(f"ONNX model {name} gives NaN or Inf on a test input: its weights are damaged; "
                               "export it again")

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses."""
        return self.session.get_providers()

    def __call__(self, lr: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {"lr": np.ascontiguousarray(lr.detach().cpu().numpy(), dtype=np.float32)}
        if "t1" in self.inputs:
            if t1 is None:
                raise InputError("this ONNX model needs the registered HR T1 guide; none was given")
            feeds["t1"] = np.ascontiguousarray(t1.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(["sr"], feeds)[0])
