"""`cohft-sr train`: train a Cohf-T model on paired (T2, T1) slices from a manifest or a training pack.

Data: ``--manifest`` (see ``data/pairs.py``: manifest format, registration, slicing, normalisation) is
turned into a training pack in memory, ``--pack`` reads one written by ``cohft-sr pack`` (numpy and
torch only; see ``data/pack.py``). Both give the same slices. Patches (``data/patches.py``): aligned LR / HR / T1
patches of ``--patch`` LR samples a side, or whole slices where the slices are smaller; LR
synthesised by the paper's k-space protocol after intensity augmentation (gamma, bias field,
k-space noise; ``--no-intensity-augment`` turns it off) and dihedral augmentation. A guided model's T1
is randomised (``data/degradations.py``: misregistration, resolution loss, thick T1 slices parallel to the
T2's, intensity remapping, dropout; ``--guide-randomisation`` names the parts, ``none`` turns it off; in-plane the
parallel slices run only where named, so that ``all`` keeps the in-plane recipe of the runs made before that part)
so that the network learns to use the guide only where the LR T2 agrees with it.

Validation and selection: a guided model is validated with the registered T1 and with the same T1
moved by one voxel along both in-plane axes (about 1.4 mm on 1 mm data); ``best.safetensors`` is the
checkpoint with the best mean of the two PSNRs (``val_score``), so a model that only gains from a
perfect guide is not preferred. A model without T1 is selected on its PSNR.

Optimisation (Sec. 4.2 of the paper, in iterations): the lr halved every ``--lr-halve-every``
iterations, batch 4, the loss of Sec. 3.1 (alpha 0.95, lambda 0.5). ``--optimizer adamw``
(default): decoupled weight decay, none on biases, normalisation parameters, attention query / key
projections and position biases. ``--optimizer adam`` is the paper's text: Adam with an L2 term of
``--weight-decay`` on every parameter, which walks the attention's query / key weights to zero
(see the model card). The network's switches (``--cross-position``,
``--adain-modulation``, ``--no-guide-input``, ...) are stored in the weights' header.

Outputs in ``--out``: ``checkpoint/`` (model + optimiser state + RNG, safetensors and JSON, no pickle;
``--resume`` continues from it exactly), ``best.safetensors`` (the checkpoint with the best
validation PSNR, loadable by ``weights.storage.load_model``), ``last.safetensors``, ``train_log.csv``,
``val_log.csv`` (with the attention health of ``training/attention_health.py``), ``run.json`` (arguments, data,
hardware, times).

Fine-tuning: ``--init WEIGHTS`` starts from a weights file (or ``--init shipped``: the shipped
model of ``--variant`` / ``--scale`` / ``--no-t1``) instead of random weights, with a fresh optimiser;
the file's network must be the one the flags describe. ``--resume`` takes precedence (the
checkpoint already holds the fine-tuned weights) and keeps the record of the starting weights. A fine-tune
validates its starting weights first (iteration 0 of ``val_log.csv``), so ``best.safetensors`` is the start itself
until a checkpoint beats it, and the log says at once whether the run has improved on it.

Through-plane: ``--through-plane`` trains the network of the through-plane mode on planes that contain a
simulated thick-slice axis (``data/planes.py``: factors 2-6, box / Gaussian profiles, gaps, noise, the guide
randomisation), interpolated back onto the thin grid; one network serves every factor (its scale is 1), so
``--scale`` does not apply and ``--patch`` is the side of the thin-grid crop; ``--factors`` trains on a subset
(``--factors 4``: a network of one factor). It is validated (box) on planes of the validation volumes at x4,
or at the trained factor nearest to 4 where 4 is not trained (``planes.validation_factor``).
``--init shipped`` then starts from the shipped x2 in-plane model of the same T1 use, every tensor whose shape fits
(the others keep their random initialisation).

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m CohfTSuperResLib.training.train ...`` (or
``torchrun ... $(which cohft-sr) train ...``): DistributedDataParallel, each rank samples its
own patches (seeded by seed, rank and iteration), so the effective batch is N x --batch-size;
rank 0 validates and writes. Backend NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from CohfTSuperResLib.data.degradations import GUIDE_PARTS, GuideRandomisation, IntensityAugmentation
from CohfTSuperResLib.data.pack import PackVolume, build_pack, read_pack, slice_sets, slice_views
from CohfTSuperResLib.data.patches import PatchSampler
from CohfTSuperResLib.data.planes import PlaneSampler, validation_factor, validation_planes
from CohfTSuperResLib.errors import InputError, Terminated, WeightsError
from CohfTSuperResLib.model import CohfTNet, build_model, count_parameters
from CohfTSuperResLib.model.config import ADAIN_MODULATIONS, CROSS_POSITIONS
from CohfTSuperResLib.options import SCALES, THROUGH_PLANE_FACTORS, THROUGH_PLANE_SCALE, VARIANTS
from CohfTSuperResLib.training.checkpoint import (checkpoint_folder, load_checkpoint, save_checkpoint,
                                                   snapshot_path)
from CohfTSuperResLib.training.distributed import Distributed
from CohfTSuperResLib.training.losses import SSIM_WINDOW, CohfTLoss
from CohfTSuperResLib.training.optimisation import OPTIMIZERS, lr_at, make_optimizer
from CohfTSuperResLib.training.validation import attention_health, log, on_device, validate
from CohfTSuperResLib.weights.registry import find_model
from CohfTSuperResLib.weights.storage import config_differences, load_model, save_weights, sha256_of


def _number(kind: type, low: float, low_included: bool = True, high: float | None = None) -> Any:
    """An argparse type: `kind` (int or float), finite, above `low` (or equal where low_included), at most `high`."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not low_included) or \
                (high is not None and value > high):
            bound = f"{'at least' if low_included else 'above'} {low:g}"
            bound += "" if high is None else f", at most {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is not {bound}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    count, positive = _number(int, 1), _number(float, 0.0, low_included=False)
    parser = argparse.ArgumentParser(prog="cohft-sr train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="CSV/JSON of (t2, t1[, transforms], role)")
    source.add_argument("--pack", type=Path, help="training pack written by `cohft-sr pack` (no SimpleITK needed)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, best model)")
    parser.add_argument("--variant", choices=VARIANTS, default="S")
    parser.add_argument("--scale", type=int, choices=SCALES, default=2)
    parser.add_argument("--no-t1", action="store_true", help="train the network without the T1 guide")
    parser.add_argument("--through-plane", action="store_true",
                        help="train the through-plane network (thick slices of --factors simulated; --scale unused)")
    parser.add_argument("--factors", type=int, nargs="+", choices=THROUGH_PLANE_FACTORS,
                        default=list(THROUGH_PLANE_FACTORS),
                        help="through-plane: the thin slices per thick slice simulated (default: all, one network "
                             "for every factor)")
    parser.add_argument("--no-inter-head", action="store_true", help="ablation: no inter-head correlation")
    parser.add_argument("--no-adain", action="store_true", help="ablation: no AdaIN")
    parser.add_argument("--adain-modulation", choices=ADAIN_MODULATIONS, default="channel",
                        help="AdaIN gamma/beta per pixel and channel, or one map for all channels (paper's text)")
    parser.add_argument("--cross-position", choices=CROSS_POSITIONS, default="local",
                        help="inter-modality attention: 'local' windows with a relative position bias, or "
                             "'none' (paper's text: all tokens, no position)")
    parser.add_argument("--no-guide-input", action="store_true",
                        help="no direct T1 path into the input gate (the paper's network)")
    parser.add_argument("--patch", type=count, default=64,
                        help="LR patch side; slices smaller than that are used whole")
    parser.add_argument("--batch-size", type=count, default=4, help="patches per step and rank")
    parser.add_argument("--iterations", type=_number(int, 0), default=200_000, help="total iterations (stop there)")
    parser.add_argument("--time-budget-minutes", type=positive, default=None,
                        help="stop cleanly after this much training time in this invocation (then validate, export)")
    parser.add_argument("--lr", type=positive, default=1e-4)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                        help="adamw: decoupled decay, not on biases / norms / query-key / position; "
                             "adam: the paper's Adam with L2 on everything")
    parser.add_argument("--weight-decay", type=_number(float, 0.0), default=1e-4)
    parser.add_argument("--lr-halve-every", type=count, default=50_000, help="halve the lr every this many iterations")
    parser.add_argument("--alpha", type=_number(float, 0.0, high=1.0), default=0.95)
    parser.add_argument("--lam", type=_number(float, 0.0), default=0.5)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="no dihedral augmentation")
    parser.add_argument("--no-intensity-augment", action="store_true",
                        help="no gamma / bias-field / k-space-noise augmentation")
    parser.add_argument("--guide-randomisation", default="all",
                        help="comma-separated parts of the T1 randomisation of guided models "
                             f"({', '.join(GUIDE_PARTS)}), each optionally PART=CHANCE; 'all' or 'none'")
    parser.add_argument("--checkpoint-minutes", type=positive, default=5.0, help="checkpoint + validate this often")
    parser.add_argument("--checkpoint-every", type=count, default=None, help="also checkpoint every N iterations")
    parser.add_argument("--keep-snapshots", action="store_true",
                        help="also keep every checkpoint's weights as OUT/snapshots/itNNNNNN.safetensors (config in "
                             "the header), to choose among them on another source afterwards")
    parser.add_argument("--val-slices", type=count, default=12, help="slab size of a 'split' volume's validation")
    parser.add_argument("--val-max-slices", type=count, default=None, help="validate on at most this many slices")
    parser.add_argument("--log-every", type=count, default=20)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--init", default=None, metavar="WEIGHTS",
                        help="fine-tune: start from this .safetensors file, or 'shipped' for the shipped model "
                             "of --variant/--scale/--no-t1 (fresh optimiser)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--threads", type=count, default=None, help="torch CPU threads per process")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's state (tensor names, dtypes, shapes and bytes, in name order): equal iff identical."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().clone(memory_format=torch.contiguous_format)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def training_volumes(args: argparse.Namespace, log: Any) -> tuple[list[PackVolume], str]:
    """The pack's volumes as stacks of slices (read, or built from the manifest) and a name of the source for
    messages."""
    if args.pack is not None:
        volumes, _meta = read_pack(args.pack)
        return volumes, str(args.pack)
    return slice_views(build_pack(args.manifest, args.val_slices, log=log)), str(args.manifest)


def load_initial_weights(model: CohfTNet, source: str, variant: str) -> dict[str, str]:
    """Copy the weights of a file, or of the shipped model ('shipped') of this variant and config, into model.

    A through-plane network (scale 1) starts from an in-plane network of the same variant and T1 use ('shipped':
    the x2 one): every tensor whose shape fits; the scale-dependent ones (input gate, T1 embedding stride, AdaIN
    lift, upsamplers) keep their random initialisation. Raises WeightsError when the file is missing, damaged or
    holds another network. Returns a record of where the weights came from (path, sha256, tensors copied).
    """
    config = model.config
    through_plane = config.scale == THROUGH_PLANE_SCALE
    if source == "shipped":
        shipped = find_model(variant, SCALES[0] if through_plane else config.scale, config.use_t1)
        initial, path, digest = shipped.load(), shipped.path, shipped.sha256  # load() checked this sha256
    else:
        path = Path(source)
        initial, digest = load_model(path), sha256_of(path)
    wanted, found = config.to_dict(), initial.config.to_dict()
    if through_plane and {**found, "scale": config.scale} == wanted:
        own = model.state_dict()
        fitting = {name: value for name, value in initial.state_dict().items() if own[name].shape == value.shape}
        model.load_state_dict(fitting, strict=False)
        return {"source": source, "path": str(path), "sha256": digest,
                "tensors": f"{len(fitting)} of {len(own)} (those whose shape fits)"}
    if found != wanted:
        raise WeightsError(f"--init {path.name} holds another network than the flags describe: "
                           f"{config_differences(found, wanted)}")
    model.load_state_dict(initial.state_dict())
    return {"source": source, "path": str(path), "sha256": digest}


def _command_line() -> str:
    """This process's command line, as the user typed it where it was `cohft-sr`."""
    if sys.argv[0].endswith("cohft-sr"):
        return "cohft-sr " + " ".join(sys.argv[1:])
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _keep_log_rows(path: Path, iteration: int) -> None:
    """Drop the training-log rows after `iteration` (logged after the checkpoint a resume starts from, and logged
    again by the resumed run)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, [row for row in reader if int(row["iteration"]) <= iteration]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns or [])
        writer.writeheader()
        writer.writerows(rows)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)"


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) training; return the summary written to run.json."""
    if args.threads:
        torch.set_num_threads(args.threads)
    # Weights that decay towards zero become subnormal floats, which x86 CPUs compute many times slower; flush them.
    torch.set_flush_denormal(True)
    env = Distributed(args.device)
    try:
        trainer = Trainer(env, args)
        iteration = trainer.loop()
        summary = trainer.finish(iteration)
        # Every rank waits here before the group is torn down: a rank that closed its connections while rank 0
        # was still writing the results aborted in CI ("terminate called without an active exception").
        env.barrier()
        return summary
    finally:
        env.close()


class Trainer:
    """One training run: data, model, optimiser and state set up once; then `step`, `checkpoint` and `finish`."""

    def __init__(self, env: Distributed, args: argparse.Namespace) -> None:
        self.env, self.args, self.device, self.out = env, args, env.device, args.out
        self.log = log if env.main else (lambda _message: None)
        if args.iterations == 0 and args.init is None and not args.resume:
            raise InputError("--iterations 0 trains nothing; it scores the starting weights of --init (or a resumed "
                             "run) without training")
        scale = THROUGH_PLANE_SCALE if args.through_plane else args.scale
        if args.patch * scale < SSIM_WINDOW:
            raise InputError(f"--patch {args.patch} gives HR patches of {args.patch * scale} pixels a side; the SSIM "
                             f"loss needs {SSIM_WINDOW}: use --patch {math.ceil(SSIM_WINDOW / scale)} or more")
        if not args.resume and (checkpoint_folder(self.out / "checkpoint") or (self.out / "best.safetensors").exists()):
            raise InputError(f"{self.out} already holds a training run: add --resume to continue it, or choose "
                             "another --out (nothing was changed)")
        self.use_t1 = not args.no_t1
        started = time.time()
        volumes, source = training_volumes(args, self.log)
        missing = sorted({volume.name for volume in volumes if not volume.has_t1})
        if self.use_t1 and missing:
            raise InputError(f"{source}: no t1 for {missing}; give one or train with --no-t1")
        self.train_volumes = [volume for volume in volumes if volume.role == "train"]
        if args.through_plane:
            self.val_data = validation_planes([volume for volume in volumes if volume.role == "val"],
                                              validation_factor(tuple(args.factors)))
        else:
            self.train_data, self.val_data = slice_sets(volumes, args.scale)
        if self.val_data.num_slices == 0:
            raise InputError(f"{source}: no validation slices; mark a row with role 'val' or 'split'")
        self.log(f"data: {sum(v.hr.shape[0] for v in self.train_volumes)} training slices from "
                 f"{len(self.train_volumes)} volumes, {self.val_data.num_slices} validation "
                 f"{'planes' if args.through_plane else 'slices'} ({time.time() - started:.0f} s)")
        torch.manual_seed(args.seed)
        model = build_model(args.variant, scale, use_t1=self.use_t1, inter_head=not args.no_inter_head,
                            adain=not args.no_adain, adain_modulation=args.adain_modulation,
                            cross_position=args.cross_position, guide_input=not args.no_guide_input)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, args.optimizer, args.lr, args.weight_decay)
        self.state: dict[str, Any] = {"iteration": 0, "best_val_score": -math.inf, "train_seconds": 0.0, "best": None}
        if args.resume:
            self.state = load_checkpoint(self.out / "checkpoint", self.model, self.optimizer)
            self.log(f"resumed from iteration {self.state['iteration']}")
            if env.main:
                _keep_log_rows(self.out / "train_log.csv", int(self.state["iteration"]))
        elif args.init is not None:
            self.state["init"] = load_initial_weights(self.model, args.init, args.variant)
            copied = f"; tensors {self.state['init']['tensors']}" if "tensors" in self.state["init"] else ""
            self.log(f"starting from {self.state['init']['path']} (sha256 {self.state['init']['sha256'][:12]}...)"
                     f"{copied}")
        # every invocation of the run (a resume may change the schedule, the data or the randomisation): run.json
        earlier = self.state.get("invocations", [])
        if earlier and earlier[-1]["data"] != source:
            self.log(f"note: resuming on {source}; the run's last invocation trained on {earlier[-1]['data']}")
        self.state["invocations"] = [*earlier, {
            "command": _command_line(), "from_iteration": int(self.state["iteration"]), "data": source}]
        self.net = self.model
        if env.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.criterion = CohfTLoss(args.alpha, args.lam)
        self.guide = (guide_randomisation(args.guide_randomisation, in_plane=not args.through_plane) if self.use_t1
                      else None)
        shared = dict(seed=args.seed, rank=env.rank, augment=not args.no_augment,
                      intensity=None if args.no_intensity_augment else IntensityAugmentation(), guide=self.guide)
        self.sampler = (PlaneSampler(self.train_volumes, args.patch, args.batch_size, factors=tuple(args.factors),
                                     **shared) if args.through_plane
                        else PatchSampler(self.train_data, args.patch, args.batch_size, **shared))
        parts = ", ".join(self.guide.active) if self.guide is not None and self.guide.active else "none"
        kind = "through-plane" if args.through_plane else f"x{args.scale}"
        self.log(f"model {args.variant} {kind} {'with' if self.use_t1 else 'without'} T1: "
                 f"{count_parameters(self.model):,} parameters, device {_hardware(self.device)}, world size "
                 f"{env.world}; LR patches of {self.sampler.patch_shape[0]} x {self.sampler.patch_shape[1]}; guide "
                 f"randomisation: {parts}")
        if env.main:  # only now: a run refused for its data or flags leaves no folder behind
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise InputError(f"--out {self.out} can not be created: {error.strerror}") from error

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        """One optimiser step on the batch of `iteration`; the loss and its parts."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(iteration, self.args.lr, self.args.lr_halve_every)
        lr_patch, hr_patch, t1_patch = (on_device(x, self.device) for x in self.sampler.batch(iteration))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            sr, grad = self.net(lr_patch, t1_patch if self.use_t1 else None)
        parts = self.criterion.components(sr.float(), grad.float(), hr_patch)
        self.optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        self.optimizer.step()
        return parts

    def checkpoint(self, iteration: int) -> dict[str, float]:
        """Validate, keep the best weights, write the checkpoint and the validation log (rank 0); all ranks wait."""
        metrics: dict[str, float] = {}
        if self.env.main:
            state = self.state
            metrics = validate(self.model, self.val_data, self.use_t1, self.device, self.args.val_max_slices,
                               self.args.bf16)
            metrics.update(attention_health(self.model, self.val_data, self.use_t1, self.device))
            if metrics["val_score"] > state["best_val_score"]:
                state["best_val_score"] = metrics["val_score"]
                state["best"] = {"iteration": iteration, **metrics}
                save_weights(self.model, self.out / "best.safetensors",
                             _weights_metadata(self.args, iteration, metrics))
            if self.args.keep_snapshots:
                save_weights(self.model, snapshot_path(self.out, iteration),
                             _weights_metadata(self.args, iteration, metrics))
            state["iteration"] = iteration
            save_checkpoint(self.out / "checkpoint", self.model, self.optimizer, state)
            _append_csv(self.out / "val_log.csv", {"iteration": iteration,
                                                   "train_seconds": round(state["train_seconds"], 1), **metrics,
                                                   "best_val_score": state["best_val_score"]})
            moved = f", moved T1 {metrics['val_psnr_moved_t1']:.3f} dB" if "val_psnr_moved_t1" in metrics else ""
            self.log(f"iteration {iteration}: val PSNR {metrics['val_psnr']:.3f} dB{moved}, SSIM "
                     f"{metrics['val_ssim']:.4f} (best score {state['best_val_score']:.3f} at "
                     f"{state['best']['iteration']})")
        self.env.barrier()
        return metrics

    def loop(self) -> int:
        """Steps until the iteration count or the time budget, checkpointing on the way; the last iteration. Stopped
        by Ctrl-C or a signal (errors.Terminated), a single-process run first writes a checkpoint where it is (not
        validated), so that --resume loses nothing."""
        iteration = int(self.state["iteration"])
        if iteration >= self.args.iterations:
            self.log(f"nothing to train: the run is at iteration {iteration}, --iterations {self.args.iterations}")
        try:
            return self._steps()
        except (KeyboardInterrupt, Terminated):
            if not self.env.enabled:  # with several processes, the others may be gone: no collective step here
                self.state["iteration"] = self.iteration
                save_checkpoint(self.out / "checkpoint", self.model, self.optimizer, self.state)
                self.log(f"stopped at iteration {self.iteration}; checkpoint written: continue with --resume")
            raise

    def _steps(self) -> int:
        """The loop of `loop`; self.iteration follows the iterations done."""
        args, state = self.args, self.state
        iteration = self.iteration = int(state["iteration"])
        loop_start = last_checkpoint = step_start = time.time()
        budget = None if args.time_budget_minutes is None else 60.0 * args.time_budget_minutes
        progress = None
        if self.env.main and not args.no_progress:
            from tqdm import tqdm
            progress = tqdm(total=args.iterations, initial=iteration, unit="it", file=sys.stderr,
                            mininterval=5 if sys.stderr.isatty() else 60, dynamic_ncols=True)
        running: dict[str, float] = {}
        count = 0
        window_seconds = state["train_seconds"]  # training time (no checkpoints) at the last log row
        self.model.train()
        while True:
            now = time.time()
            stop = iteration >= args.iterations or (budget is not None and now - loop_start >= budget)
            start_of_fine_tune = iteration == 0 and args.init is not None and not args.resume  # the score to beat
            save = (start_of_fine_tune or now - last_checkpoint >= 60.0 * args.checkpoint_minutes
                    or (args.checkpoint_every is not None and iteration > 0 and iteration % args.checkpoint_every == 0
                        and iteration != state.get("iteration")))
            stop, save = self.env.agree([int(stop), int(save)])
            if stop:
                break
            if save:
                state["train_seconds"] += time.time() - step_start
                self.checkpoint(iteration)
                last_checkpoint = step_start = time.time()
            parts = self.step(iteration)
            iteration = self.iteration = iteration + 1
            for key in ("total", "mse_image", "ssim_image"):
                running[key] = running.get(key, 0.0) + float(parts[key].detach())
            count += 1
            if progress is not None:
                progress.update(1)
            if self.env.main and iteration % args.log_every == 0:
                trained = state["train_seconds"] + time.time() - step_start
                row = {"iteration": iteration, "lr": self.optimizer.param_groups[0]["lr"],
                       **{f"loss_{k}" if k == "total" else k: v / count for k, v in running.items()},
                       "train_seconds": round(trained, 1), "sec_per_it": round((trained - window_seconds) / count, 4)}
                window_seconds = trained
                _append_csv(self.out / "train_log.csv", row)
                if progress is not None:
                    progress.set_postfix(loss=f"{row['loss_total']:.4f}", refresh=False)
                running, count = {}, 0
        state["train_seconds"] += time.time() - step_start
        if progress is not None:
            progress.close()
        return iteration

    def finish(self, iteration: int) -> dict[str, Any]:
        """The last checkpoint, the last weights and run.json (rank 0), with every rank's weight checksum."""
        final = self.checkpoint(iteration)
        digests = [state_digest(self.model)]
        if self.env.enabled:
            gathered: list[Any] = [None] * self.env.world
            dist.all_gather_object(gathered, digests[0])
            digests = gathered
        if not self.env.main:
            return {}
        args, state = self.args, self.state
        save_weights(self.model, self.out / "last.safetensors", _weights_metadata(args, iteration, final))
        summary = {
            "command": _command_line(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "invocations": state["invocations"],
            "iterations": iteration, "train_seconds": round(state["train_seconds"], 1),
            "best": state["best"], "final": {"iteration": iteration, **final}, "init": state.get("init"),
            "hardware": _hardware(self.device), "world_size": self.env.world, "torch": torch.__version__,
            "rank_weights_sha256": digests,
            "guide_randomisation": None if self.guide is None else self.guide.to_dict(),
            "data": {"train_volumes": [volume.name for volume in self.train_volumes],
                     "train_slices": sum(volume.hr.shape[0] for volume in self.train_volumes),
                     "val_volumes": self.val_data.names, "val_slices": self.val_data.num_slices},
        }
        (self.out / "run.json").write_text(json.dumps(summary, indent=1))
        if len(set(digests)) > 1:
            self.log(f"warning: the ranks ended with different weights: {digests}")
        self.log(f"done: {iteration} iterations, {state['train_seconds'] / 60:.1f} min of training, "
                 f"best val score {state['best_val_score']:.3f} dB at iteration {state['best']['iteration']}")
        return summary


def guide_randomisation(parts: str, in_plane: bool = False) -> GuideRandomisation:
    """The GuideRandomisation of a --guide-randomisation value: 'all', 'none' or a comma-separated list of parts,
    each at its default chance or given one as PART=CHANCE (e.g. 'misregistration=0.3,dropout'). In-plane,
    parallel_slices only where it is named ('all' leaves it out there)."""
    items = [item.strip() for item in parts.split(",") if item.strip()]
    names = [item.split("=")[0].strip() for item in items]
    try:
        chances = {name: float(item.split("=", 1)[1]) for name, item in zip(names, items) if "=" in item}
        if any(not 0.0 <= chance <= 1.0 for chance in chances.values()):
            raise ValueError(f"a chance is a probability in [0, 1], not {chances}")
        if set(chances) & {"all", "none"}:
            raise ValueError("'all' and 'none' take no chance")
        if in_plane and "parallel_slices" not in names:
            chances["parallel_slices"] = 0.0
        return replace(GuideRandomisation.only(names), **chances)
    except ValueError as error:
        raise InputError(f"--guide-randomisation: {error}") from error


def _weights_metadata(args: argparse.Namespace, iteration: int, metrics: dict[str, float]) -> dict[str, Any]:
    factors = sorted(set(args.factors))
    contiguous = len(factors) > 1 and factors == list(range(factors[0], factors[-1] + 1))
    trained = f"{factors[0]}-{factors[-1]}" if contiguous else ", ".join(map(str, factors))
    grid = ("thin slices tiling each thick slice, interpolated by upsample_slices_cubic before the network; "
            f"factors {trained}" if args.through_plane else "DFT: LR sample j at HR sample s*j")
    metadata = {"iteration": iteration, "validation": metrics, "guide_randomisation": args.guide_randomisation,
                "normalisation": "per-volume 99.5th percentile of positive voxels; T2 scale of the (synthesised) LR "
                                 "T2 volume, as inference computes it; T1 scale of the T1 volume",
                "grid": grid, "patch": args.patch, "seed": args.seed}
    return metadata | ({"factors": factors} if args.through_plane else {})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":  # `python -m` and `torchrun -m`: the command line's one-line errors and signals
    from CohfTSuperResLib.cli import main as command_line

    raise SystemExit(command_line(["train", *sys.argv[1:]]))
