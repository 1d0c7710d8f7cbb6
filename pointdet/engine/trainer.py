"""The training loop: one readable ``Trainer`` (AMP, DDP, checkpoints with exact resume, TensorBoard, tqdm).

Resume is exact: data order and augmentation are functions of ``(seed, epoch, position)``
(``SeededShuffleSampler``), the learning rate a function of the step, so restoring the weights, the optimizer
and ``(epoch, step_in_epoch)`` continues the run as if it had never stopped. Every ``last.pt`` is written at a
step boundary (Ctrl-C finishes the step first) and records whether an evaluation is due, which a resumed run
then runs first, so a run stopped in any way ends with the weights and metrics of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from pointdet.configs import CONFIG_VERSION, ConfigError, ExperimentConfig, OptimConfig, config_to_dict
from pointdet.data.coco import CocoDataset, DatasetError
from pointdet.data.images import read_image
from pointdet.data.kitti import KittiDataset
from pointdet.distributed import (
    barrier,
    broadcast_object,
    device_for_process,
    is_main_process,
    world,
)
from pointdet.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_weights,
    model_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from pointdet.engine.data import eval_loader, load_datasets, train_loader
from pointdet.engine.evaluate import (
    describe_subset,
    evaluate_model,
    match_categories,
    primary_metric,
    run_inference,
)
from pointdet.engine.interrupt import StepBoundaryInterrupt
from pointdet.engine.loss_window import LossWindow
from pointdet.engine.output_paths import DiskFullError
from pointdet.engine.plots import write_plots, write_training_curves
from pointdet.engine.run_folder import RunFolderError, RunFolderLock, lock_run_folder, new_run_folder
from pointdet.engine.train_step import TrainStep
from pointdet.engine.visualize import draw_detections, draw_mono3d
from pointdet.models.build import build_model

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between the loss / learning-rate entries of TensorBoard and the curves (after the first 10)


def init_distributed() -> None:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPU, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)


def _check_task_fits_data(config: ExperimentConfig, dataset) -> None:
    task, where = config.model.task, dataset.annotation_file
    if isinstance(dataset, CocoDataset):
        dataset.require_objects()
    if task == "pose" and not dataset.keypoint_names:
        raise DatasetError(f"{where}: model.task=pose needs categories with 'keypoints'; none define any")
    if (task == "mono3d") != isinstance(dataset, KittiDataset):
        raise DatasetError(
            f"{where}: model.task={task} needs "
            + ("KITTI data (data.format=kitti)" if task == "mono3d" else "COCO data (data.format=coco)")
        )


def learning_rate(config: ExperimentConfig, step: int, steps_per_epoch: int) -> float:
    """Scaled base lr x linear warm-up (from ``warmup_ratio``) x the decay: step (x0.1 after each of ``lr_steps``
    epochs) or cosine (from 1 after the warm-up to 0 at the end of ``epochs``)."""
    optim = config.optim
    base = optim.lr * optim.batch_size * world()[1] / optim.base_batch
    warmup = 1.0
    if step < optim.warmup_iters:
        warmup = optim.warmup_ratio + (1 - optim.warmup_ratio) * step / optim.warmup_iters
    if optim.schedule == "cosine":
        total = max(optim.epochs * steps_per_epoch - optim.warmup_iters, 1)
        progress = min(max(step - optim.warmup_iters, 0) / total, 1.0)
        return base * warmup * 0.5 * (1 + math.cos(math.pi * progress))
    epoch = step // steps_per_epoch
    return base * warmup * 0.1 ** sum(epoch >= s for s in optim.lr_steps)


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum; trainable parameters only (frozen backbone stages are left out)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if optim.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    return torch.optim.Adam(parameters, lr=optim.lr, weight_decay=optim.weight_decay)


class Trainer:
    """Trains ``config`` from scratch, or continues the checkpoint ``resume`` (a run folder or a ``.pt``)."""

    def __init__(self, config: ExperimentConfig, resume: str | Path | None = None) -> None:
        init_distributed()
        self.config = config
        self.run_lock: RunFolderLock | None = None
        self._claim_run_folder(resume)
        try:
            self._set_up(config, resume)
        except BaseException:
            self._release_run_folder(remove_if_unused=True)
            raise

    def _set_up(self, config: ExperimentConfig, resume: str | Path | None) -> None:
        self.device = torch.device("cpu") if config.device == "cpu" else device_for_process()
        if config.device == "cuda" and self.device.type != "cuda":
            raise RuntimeError("device=cuda was asked for but CUDA is not available")
        torch.manual_seed(config.seed)
        if config.data.val_json is None and config.data.train_json is not None:
            logger.warning("no data.val_json given: validating on the training set")
        self.train_set, self.val_set = load_datasets(
            config.data,
            with_masks=config.model.needs_masks,
            with_polygons=getattr(config.model, "needs_polygons", False),  # LSNet's extreme points
        )
        _check_task_fits_data(config, self.train_set)
        # Refuse a validation set with categories the model will not know before training, not at its first eval.
        subset = describe_subset(self.class_names, match_categories(self.class_names, self.val_set))
        if subset:
            logger.warning("%s: %s", self.val_set.annotation_file, subset)
        self.loader, self.sampler = train_loader(self.train_set, config, self.device)
        self.val_loader = eval_loader(self.val_set, config.data, config.eval.batch_size, config.data.num_workers)
        self.steps_per_epoch = len(self.sampler) // config.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{len(self.train_set)} training images give no full batch of {config.optim.batch_size} per process"
            )
        self.model = build_model(
            config.model,
            len(self.train_set.class_names),
            len(self.train_set.keypoint_names),
            self.train_set.flip_pairs,
            with_backbone_weights=resume is None,  # a resumed run's weights come from its checkpoint
        ).to(self.device)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.optim.amp]
        if self.amp_dtype == torch.float16 and self.device.type != "cuda":
            raise ConfigError("optim.amp=fp16 needs CUDA (its gradient scaler); use optim.amp=bf16 on the CPU")
        self.step_module: torch.nn.Module = TrainStep(self.model, self.amp_dtype)
        if world()[1] > 1:
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_ap, self.history = -1.0, []
        self.loss_log: list[dict] = []  # {"step", "lr", <loss term>: value} every LOG_EVERY steps: the curves
        self.eval_due = False  # the epoch just finished is to be evaluated (saved, so that a resumed run does it)
        self.saved_step: int | None = None  # the step last.pt holds
        if resume is not None:
            self._restore(resume)
        self.writer = None
        if is_main_process():
            self._remove_stale_temporaries()
            text = yaml.safe_dump(config_to_dict(self.config), sort_keys=False)
            (self.run_dir / "config.yaml").write_text(f"# pointdet config version {CONFIG_VERSION}\n{text}")
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    @property
    def class_names(self) -> list[str]:
        """The model's classes (its labels index them): the training set's categories."""
        return list(self.train_set.class_names)

    # ------------------------------------------------------------------------------------------ run folder
    def _claim_run_folder(self, resume: str | Path | None) -> None:
        """Lock the run folder for this run (``engine.run_folder``): the resumed run's, ``run_dir``, or a new
        ``out_dir/NAME-<time>``. The main process claims it; the others learn its path, or the refusal."""
        folder, problem = None, None
        if is_main_process():
            try:
                if resume is not None:
                    self.run_lock = lock_run_folder(Path(resume) if Path(resume).is_dir() else Path(resume).parent)
                elif self.config.run_dir:
                    self.run_lock = lock_run_folder(self.config.run_dir)
                else:
                    new = new_run_folder(self.config.out_dir, self.config.name)
                    self.run_lock = lock_run_folder(new, created=True)
                folder = str(self.run_lock.folder)
            except RunFolderError as error:
                problem = str(error)
        folder, problem = broadcast_object((folder, problem))
        if problem is not None:
            raise RunFolderError(problem)
        self.run_dir = Path(folder)

    def _release_run_folder(self, remove_if_unused: bool = False) -> None:
        if self.run_lock is not None:
            self.run_lock.release(remove_if_unused)
            self.run_lock = None

    # ----------------------------------------------------------------------------------------------- state
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_ap": self.best_ap,
            "history": json.dumps(self.history),
            "loss_log": json.dumps(self.loss_log),
            "eval_due": self.eval_due,
            "config": config_to_dict(self.config),
            "config_version": CONFIG_VERSION,
            "class_names": list(self.train_set.class_names),
            "category_ids": list(self.train_set.category_ids),
            "keypoint_names": list(self.train_set.keypoint_names),
            "flip_pairs": [list(pair) for pair in self.train_set.flip_pairs],
            "skeleton": [list(pair) for pair in self.train_set.skeleton],
            **self._camera(),
            "world_size": world()[1],
        }

    def _camera(self) -> dict:
        """For KITTI models, the camera of the first training image: ``pointdet predict`` falls back on it."""
        if isinstance(self.train_set, KittiDataset) and self.train_set.records:
            return {"calibration": self.train_set.records[0].calibration.tolist()}
        return {}

    def _restore(self, source: str | Path) -> None:
        state = load_checkpoint(source)
        if "optimizer" not in state:
            raise CheckpointError(f"{source}: holds the model weights only (best.pt); resume from the run's last.pt")
        load_model_weights(self.model, model_state(state), source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.best_ap, self.history = state["best_ap"], json.loads(state["history"])
        self.loss_log = json.loads(state.get("loss_log", "[]"))  # absent in checkpoints from before the curves
        self.eval_due, self.saved_step = bool(state.get("eval_due", False)), self.global_step
        if state["world_size"] != world()[1]:
            logger.warning(
                "resuming a %d-process run with %d processes: data order differs from here on",
                state["world_size"],
                world()[1],
            )

    def save(self, name: str, weights_only: bool = False) -> None:
        """Write ``name`` into the run folder: everything resume needs, or with ``weights_only`` the model and
        what ``pointdet.load`` reads (no optimizer state: a third of the size for Adam)."""
        if is_main_process():
            state = self._state()
            if weights_only:
                state = {key: value for key, value in state.items() if key not in ("optimizer", "scaler")}
            try:
                save_checkpoint(state, self.run_dir / name)
            except DiskFullError as error:
                last = self.run_dir / "last.pt"
                resume = f"continue with: pointdet train --resume {self.run_dir}" if last.exists() else "train again"
                raise DiskFullError(f"{error}. Free some space, then {resume}") from None
        if name == "last.pt":
            self.saved_step = self.global_step

    def _remove_stale_temporaries(self) -> None:
        removed = remove_stale_temporaries(self.run_dir)
        if removed:
            listed = ", ".join(f"{path.name} ({size / 1e6:.1f} MB)" for path, size in removed)
            logger.warning(
                "removed %d half-written checkpoint file(s) left by a stopped save: %s", len(removed), listed
            )

    # ------------------------------------------------------------------------------------------- training
    @property
    def total_steps(self) -> int:
        full = self.steps_per_epoch * self.config.optim.epochs
        return min(full, self.config.max_steps) if self.config.max_steps else full

    def train(self) -> dict:
        """Run (or continue) the schedule; returns the final metrics (also in ``metrics.json``).

        Ctrl-C finishes the step under way, saves ``last.pt`` and raises ``KeyboardInterrupt``; a second one, or one
        during an evaluation (``last.pt`` says it is due, so a resumed run repeats it), stops at once. The run
        folder's lock is released at the end, however the run ends.
        """
        try:
            return self._train()
        finally:
            self._release_run_folder()

    def _train(self) -> dict:
        start = time.time()
        with StepBoundaryInterrupt() as interrupt:
            try:
                if self.eval_due:
                    if is_main_process():
                        print(f"the evaluation of step {self.global_step} was interrupted: running it first")
                    self._evaluate_and_keep_best()
                while self.global_step < self.total_steps and not interrupt.requested:
                    self._train_epoch(interrupt)
                    if self.eval_due and not interrupt.requested:
                        self._evaluate_and_keep_best()
            except KeyboardInterrupt:
                self._say_stopped(at_once=True)
                raise
        if interrupt.requested:
            self._say_stopped(at_once=False)
            raise KeyboardInterrupt
        metrics = self.history[-1]["metrics"] if self.history else self._evaluate_and_keep_best()
        if is_main_process():
            self._write_visualizations()
            summary = {
                "final": metrics,
                "per_class": self.history[-1].get("per_class", {}) if self.history else {},
                "best_ap": self.best_ap,
                "history": self.history,
                "train_seconds": round(time.time() - start, 1),
            }
            (self.run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
            self.writer.close()
        barrier()
        return metrics

    def _say_stopped(self, at_once: bool) -> None:
        if not is_main_process():
            return
        resume = f"pointdet train --resume {self.run_dir}"
        if not at_once:
            print(
                f"\nstopped after step {self.global_step}, saved in {self.run_dir / 'last.pt'}; continue with: {resume}"
            )
        elif self.saved_step is None:
            print("\nstopped at once, before a checkpoint was saved")
        elif self.eval_due and self.saved_step == self.global_step:
            print(f"\nstopped during the evaluation of step {self.global_step}; {resume} runs it first")
        else:
            print(f"\nstopped at once; last.pt holds step {self.saved_step}; continue from there with: {resume}")

    def _train_epoch(self, interrupt: StepBoundaryInterrupt) -> None:
        """Steps to the end of the epoch, of the schedule or to a Ctrl-C; then ``last.pt`` (with ``eval_due``)."""
        with interrupt.deferred():
            self._run_steps(interrupt)
            if self.step_in_epoch == self.steps_per_epoch:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.eval_due = self.global_step >= self.total_steps or (
                self.step_in_epoch == 0 and self.epoch % self.config.eval.every == 0
            )
            self.save("last.pt")
            interrupt.agreed()  # a Ctrl-C on any process during the save stops every process here

    def _run_steps(self, interrupt: StepBoundaryInterrupt) -> None:
        self.sampler.set_epoch(self.epoch, skip=self.step_in_epoch * self.config.optim.batch_size)
        self.model.train()
        remaining = min(self.steps_per_epoch - self.step_in_epoch, self.total_steps - self.global_step)
        bar = tqdm(
            total=remaining,
            desc=f"epoch {self.epoch + 1}/{self.config.optim.epochs}",
            disable=not is_main_process(),
            leave=False,
        )
        window = LossWindow()  # the losses are read (one host sync) when logged, saved or stopped, not every step
        for batch in self.loader:
            window.add(self.global_step, self._step(batch))
            self.step_in_epoch += 1
            self.global_step += 1
            bar.update()
            logs = self._logs_this_step()
            saves = bool(self.config.checkpoint_every) and self.global_step % self.config.checkpoint_every == 0
            if logs or saves:
                losses = window.read()
                bar.set_postfix(loss=f"{sum(losses.values()):.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
            if logs:
                self._log_losses(losses)
            if saves:
                self.save("last.pt")
            if self.step_in_epoch == self.steps_per_epoch or self.global_step >= self.total_steps:
                break
            if interrupt.agreed():
                break
        if len(window):
            window.read()  # a non-finite loss stops the run before the epoch's checkpoint
        bar.close()

    def _logs_this_step(self) -> bool:
        """Loss entries every ``LOG_EVERY`` steps, at epoch ends and at the last step, and at each of the first
        ``LOG_EVERY`` steps: a short run's curves have points too."""
        return (
            self.global_step <= LOG_EVERY
            or self.global_step % LOG_EVERY == 0
            or self.step_in_epoch == self.steps_per_epoch
            or self.global_step >= self.total_steps
        )

    def _log_losses(self, losses: dict[str, float]) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.loss_log.append({"step": self.global_step, "lr": lr, **losses})
        if self.writer is not None:
            for name, value in losses.items():
                self.writer.add_scalar(f"train/{name}", value, self.global_step)
            self.writer.add_scalar("train/lr", lr, self.global_step)

    def _step(self, batch) -> dict[str, torch.Tensor]:
        """One optimizer step; returns the loss terms as device tensors (``LossWindow`` checks them)."""
        lr = learning_rate(self.config, self.global_step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = self.step_module(batch.images, batch.instances)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return losses

    # ------------------------------------------------------------------------------------------ evaluation
    def _evaluate_and_keep_best(self) -> dict[str, float]:
        evaluation = evaluate_model(
            self.model, self.val_loader, self.val_set, self.config.eval, class_names=self.class_names
        )
        metrics = evaluation.metrics
        self.eval_due = False
        entry = {"epoch": self.epoch, "step": self.global_step, "metrics": metrics}
        if evaluation.per_class:
            entry["per_class"] = evaluation.per_class
        if evaluation.class_agnostic is not None:
            entry["class_agnostic"] = evaluation.class_agnostic
        self.history.append(entry)
        if is_main_process():
            where = f"epoch {self.epoch} step {self.global_step} — {self.val_set.annotation_file.name}"
            tqdm.write(f"{where}\n{evaluation.describe()}")
            for name, value in metrics.items():
                self.writer.add_scalar(f"val/{name}", value, self.global_step)
            if evaluation.class_agnostic is not None:
                self.writer.add_scalar("val/class_agnostic_AP", evaluation.class_agnostic["AP"], self.global_step)
            if self.config.eval.plots:
                self._write_plots(evaluation)
        score = metrics[primary_metric(metrics)]
        if score > self.best_ap:
            self.best_ap = score
            self.save("best.pt", weights_only=True)
        self.save("last.pt")
        return metrics

    def _write_plots(self, evaluation) -> None:
        """Redraw ``RUN/plots`` (a failed picture is a warning, never the end of the run)."""
        folder = self.run_dir / "plots"
        write_training_curves(folder, self.loss_log, self.history)
        write_plots(folder, evaluation)

    def _write_visualizations(self) -> None:
        count = self.config.num_visualizations
        if count <= 0:
            return
        folder = self.run_dir / "visualizations"
        folder.mkdir(exist_ok=True)
        subset = torch.utils.data.Subset(self.val_loader.dataset, range(min(count, len(self.val_loader.dataset))))
        loader = torch.utils.data.DataLoader(subset, batch_size=count, collate_fn=self.val_loader.collate_fn)
        batch = next(iter(loader))
        detections, _ = run_inference(
            self.model, [batch], flip=False, scales=(1.0,), k=self.config.eval.topk, progress=False
        )
        for index, image_id, dets in zip(range(count), batch.image_ids, detections, strict=False):
            record = self.val_set.records[index]
            image = read_image(record.path)
            if isinstance(self.val_set, KittiDataset):
                truth = self.val_set.instances(index, *image.shape[-2:]).boxes3d[:, :7]
                calibration = torch.from_numpy(record.calibration)
                drawn = draw_mono3d(image, dets, calibration, self.class_names, ground_truth=truth)
            else:
                drawn = draw_detections(image, dets, self.class_names, skeleton=self.val_set.skeleton)
            drawn.save(folder / f"{image_id}.jpg", quality=92)
