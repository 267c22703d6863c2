"""Fit and predict: batched, seeded, on uint8 tensors converted per batch on the device."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from al_sim.config.schema import TrainerConf
from al_sim.core.device import (
    autocast,
    configure,
    fits_on_device,
    resolve_device,
    seeded,
    to_device,
)
from al_sim.core.events import FitReport
from al_sim.core.footprint import inference_bytes
from al_sim.core.scoring import Need, Output, Source
from al_sim.data.base import Images
from al_sim.data.transforms import Preprocess
from al_sim.maths.task import Task
from al_sim.models.base import ALModel
from al_sim.runtime.errors import ConfigError

_MIN_EARLY_STOPPING_IMAGES = 10

__all__ = ["Trainer", "resolve_device"]

Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# Task.loss -> the torch loss; the weight is per class (cross-entropy) or per finding
# (pos_weight of BCEWithLogits)
LOSSES: dict[str, Criterion] = {
    "cross_entropy": lambda logits, y, w: F.cross_entropy(logits, y, weight=w),
    "binary_cross_entropy_with_logits":
        lambda logits, y, w: F.binary_cross_entropy_with_logits(logits, y, pos_weight=w),
}
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {  # Task.activation
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "sigmoid": torch.sigmoid,
}


class Trainer:
    """Trains and runs a model with the settings of ``TrainerConf`` for a ``task``
    (default: single-label, softmax and cross-entropy)."""

    def __init__(self, conf: TrainerConf, preprocess: Preprocess, device: torch.device,
                 task: Task | None = None) -> None:
        self.conf = conf
        self.task = task
        multilabel = task is not None and task.multilabel
        self._label_dtype = torch.float32 if multilabel else torch.long
        self._criterion = LOSSES["cross_entropy" if task is None else task.loss]
        self._activate = ACTIVATIONS["softmax" if task is None else task.activation]
        self.preprocess = preprocess
        self.device = device
        channels_last = torch.channels_last_3d if preprocess.spatial_rank == 3 else \
            torch.channels_last
        self._memory_format = channels_last if conf.channels_last else torch.contiguous_format
        self._inference_bytes: dict[tuple[type, tuple[int, ...]], int] = {}
        configure(conf, device)

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` moved to the device once when it fits (``trainer.resident_memory_fraction`` of
        the free GPU memory), else ``x`` as it is: its batches then stream over one by one."""
        if not isinstance(x, torch.Tensor):  # e.g. a memory-mapped pool: read per batch
            return x
        if fits_on_device(x.numel() * x.element_size(), self.device,
                          self.conf.resident_memory_fraction):
            return x.to(self.device)
        return x

    def eval_batch_size(self, model: ALModel, x: Images, members: int = 1) -> int:
        """``trainer.eval_batch_size``, or with ``auto`` the table's entry for this
        device, model class and image size (``<device>-<Model>-<px>``, then shorter keys);
        at most as many images as hold ``trainer.inference_memory_mb`` of activations of
        ``members`` models at once (a lock-step stack): the peak of the tensors alive during
        one image's pass, measured once per model class and image shape."""
        size = self._configured_eval_batch(model, x)
        if self.conf.inference_memory_mb is None or len(x) == 0:
            return size
        key = (type(model), tuple(int(d) for d in x.shape[1:]))
        if key not in self._inference_bytes:  # one image through the model, measured
            probe = self._inputs(x[:1])
            if next(model.parameters()).is_meta:  # a stack's template: shapes only
                probe = probe.to("meta")
            self._inference_bytes[key] = max(1, inference_bytes(model, probe))
        budget = self.conf.inference_memory_mb * 2**20 / members
        return max(1, min(size, int(budget // self._inference_bytes[key])))

    def _configured_eval_batch(self, model: ALModel, x: Images) -> int:
        if self.conf.eval_batch_size != "auto":
            return int(self.conf.eval_batch_size)
        table, dev = self.conf.eval_batch_table, self.device.type
        name, px = type(model).__name__, x.shape[-1]
        keys = [f"{dev}-{name}-{px}", f"{dev}-{name}"]
        if len(x.shape) == 5:  # volumes: their own entries first (a 28^3 pass is not a 28 px one)
            keys = [f"{dev}-{name}-{px}^3", f"{dev}-{name}-3d", f"{dev}-3d", *keys]
        for key in [*keys, dev]:
            if key in table:
                return int(table[key])
        raise ConfigError(f"trainer.eval_batch_table has no entry for {dev} ({', '.join(keys)} "
                          f"or {dev}); add trainer.eval_batch_table.{dev}=<batch size> or set "
                          "trainer.eval_batch_size=<batch size>")

    # ------------------------------------------------------------------ training
    def fit(
        self, model: ALModel, x: Images, y: np.ndarray, n_classes: int, seed: int,
        val: tuple[Images, np.ndarray] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> FitReport:
        """Train ``model`` in place on uint8 images ``x`` and labels ``y`` (``N`` classes, or
        ``N x F`` finding bits for a multi-label task).

        With early stopping on, the best epoch is chosen on ``val`` when given,
        else on a held-out slice of the labelled set. ``progress(steps, planned)`` is
        called after every optimiser step (early stopping may end before ``planned``).
        """
        conf = self.conf
        gen = torch.Generator().manual_seed(seed)
        labels = torch.as_tensor(y, dtype=self._label_dtype).to(self.device)
        val_x: Images | None
        val_y: torch.Tensor | None
        if val is not None and conf.early_stopping_patience is not None:
            train_idx, val_x = torch.arange(len(labels)), val[0]
            val_y = torch.as_tensor(val[1], dtype=self._label_dtype)
        else:
            train_idx, val_idx = self._split(len(labels), gen)
            val_x = None if val_idx is None else x[val_idx.to(x.device)]
            val_y = None if val_idx is None else labels[val_idx.to(self.device)].cpu()
        # torch's stubs omit Module.to's memory_format keyword
        model.to(self.device, memory_format=self._memory_format)  # type: ignore[call-overload]
        optimiser = torch.optim.AdamW(model.parameters(), lr=conf.lr,
                                      weight_decay=conf.weight_decay)
        weight = self._class_weights(labels[train_idx], n_classes)
        per_epoch = math.ceil(len(train_idx) / conf.batch_size)
        epochs = max(conf.epochs, math.ceil(conf.min_steps / per_epoch))
        schedule = None
        if conf.lr_schedule == "cosine":
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser,
                                                                  T_max=epochs * per_epoch)
        scaler = torch.amp.GradScaler(self.device.type, enabled=conf.precision == "fp16")
        best: tuple[float, dict[str, Any] | None, int] = (math.inf, None, 0)  # loss, state, epoch
        steps, loss_sum, seen = 0, 0.0, 0
        with seeded(seed, self.device):
            epoch = 0
            for epoch in range(1, epochs + 1):  # noqa: B007 - the last epoch is reported
                model.train()
                loss_sum, seen = 0.0, 0
                losses, sizes = [], []
                for batch in self._batches(train_idx, gen):
                    xb = self._inputs(x[batch.to(x.device)], train=True, gen=gen)
                    yb = labels[batch.to(self.device)]
                    with autocast(conf, self.device):
                        loss = self._criterion(model(xb), yb, weight)
                    optimiser.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimiser)
                    scaler.update()
                    if schedule is not None:
                        schedule.step()
                    steps += 1
                    if progress is not None:
                        progress(steps, epochs * per_epoch)
                    losses.append(loss.detach())
                    sizes.append(len(batch))
                    seen += len(batch)
                # one device sync per epoch; the same float64 sum, in order, as per batch
                if losses:
                    values = torch.stack(losses).float().cpu().tolist()
                    loss_sum = sum(v * n for v, n in zip(values, sizes, strict=True))
                if val_x is None or val_y is None:
                    continue
                val_loss = self._loss(model, val_x, val_y, weight)
                if val_loss < best[0]:
                    best = (val_loss, copy.deepcopy(model.state_dict()), epoch)
                elif epoch - best[2] >= (conf.early_stopping_patience or 0):
                    break
        if best[1] is not None:
            model.load_state_dict(best[1])
        return FitReport(epochs=epoch, steps=steps, train_loss=loss_sum / max(seen, 1),
                         val_loss=None if val_x is None else best[0])

    def _split(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        order = torch.randperm(n, generator=gen)
        if self.conf.early_stopping_patience is None or n < _MIN_EARLY_STOPPING_IMAGES:
            return torch.arange(n), None
        n_val = min(n - 1, max(1, round(n * self.conf.early_stopping_fraction)))  # >= 1 to train
        return order[n_val:].sort().values, order[:n_val].sort().values

    def _batches(self, idx: torch.Tensor, gen: torch.Generator) -> Iterator[torch.Tensor]:
        order = idx[torch.randperm(len(idx), generator=gen)]
        for start in range(0, len(order), self.conf.batch_size):
            batch = order[start : start + self.conf.batch_size]
            if len(batch) == 1 and len(order) > 1:
                continue  # batch norm cannot train on a single image
            yield batch

    def _class_weights(self, y: torch.Tensor, n_classes: int) -> torch.Tensor | None:
        """Inverse class frequencies; multi-label: ``pos_weight`` = negatives / positives per
        finding (1 for a finding with no positive or no negative yet)."""
        if not self.conf.class_weighted_loss:
            return None
        if y.ndim == 2:
            pos = y.sum(dim=0)
            neg = len(y) - pos
            return torch.where((pos > 0) & (neg > 0), neg / pos.clamp(min=1), 1.0)
        counts = torch.bincount(y, minlength=n_classes).float()
        present = counts > 0
        weight = torch.ones(n_classes)
        weight[present] = counts[present].sum() / (present.sum() * counts[present])
        return weight.to(self.device)

    def _inputs(self, xb: torch.Tensor, train: bool = False,
                gen: torch.Generator | None = None) -> torch.Tensor:
        """uint8 batch -> model input, converted (and augmented) on the device."""
        xb = self.preprocess(to_device(xb, self.device), train=train, generator=gen,
                             fused=self.conf.fused_normalise)
        return xb.contiguous(memory_format=self._memory_format)

    def _loss(self, model: ALModel, x: Images, y: torch.Tensor,
              weight: torch.Tensor | None) -> float:
        logits = torch.from_numpy(self.predict_logits(model, x))
        return float(self._criterion(logits, y, None if weight is None else weight.cpu()))

    # ------------------------------------------------------------------ inference
    def score(self, model: ALModel, source: Source, indices: np.ndarray | None,
              need: Need) -> Output:
        """What ``need`` asks of ``model`` on ``source``'s rows at ``indices`` (all with None):
        the one call a strategy's view and the loop make (a lock-step member's trainer joins
        it with the stack's other members)."""
        x = source.take(indices)
        if need.kind == "probs":
            return self.predict_proba(model, x)
        if need.kind == "features":
            return self.embed(model, x)
        if need.kind == "features_and_probs":
            return self.features_and_proba(model, x)
        return self.mc_proba(model, x, need.samples, need.seed)

    def _map(self, model: ALModel, x: Images, fn: Callable[[torch.Tensor], torch.Tensor],
             dropout: bool = False) -> np.ndarray:
        model.eval()
        # torch's stubs omit Module.to's memory_format keyword
        model.to(self.device, memory_format=self._memory_format)  # type: ignore[call-overload]
        size = self.eval_batch_size(model, x)  # measured in eval mode: no dropout draw
        if dropout:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.train()
        outs = []
        try:
            with torch.inference_mode(), autocast(self.conf, self.device):
                for start in range(0, len(x), size):
                    outs.append(fn(self._inputs(x[start : start + size])).float())
        finally:
            model.eval()
        return torch.cat(outs).cpu().numpy()

    def predict_logits(self, model: ALModel, x: Images) -> np.ndarray:
        """Logits ``N x C`` in eval mode."""
        return self._map(model, x, model)

    def predict_proba(self, model: ALModel, x: Images) -> np.ndarray:
        """Probabilities ``N x C`` in eval mode (softmax; per-finding sigmoid if multi-label)."""
        return self._map(model, x, lambda xb: self._activate(model(xb).float()))

    def embed(self, model: ALModel, x: Images) -> np.ndarray:
        """Penultimate embeddings ``N x D`` in eval mode."""
        return self._map(model, x, model.features)

    def features_and_proba(self, model: ALModel, x: Images) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``N x D`` and probabilities ``N x C`` from one eval-mode pass."""

        def both(xb: torch.Tensor) -> torch.Tensor:
            z = model.features(xb)
            return torch.cat([z.float(), self._activate(model.head(z).float())], dim=1)

        out = self._map(model, x, both)
        dim = out.shape[1] - model.n_classes
        return np.ascontiguousarray(out[:, :dim]), np.ascontiguousarray(out[:, dim:])

    def mc_proba(self, model: ALModel, x: Images, samples: int, seed: int) -> np.ndarray:
        """MC-dropout probabilities ``N x T x C``: the trunk once, the dropout head T times."""

        def sample(xb: torch.Tensor) -> torch.Tensor:
            z = model.features(xb)
            draws = [self._activate(model.head(z).float()) for _ in range(samples)]
            return torch.stack(draws, 1)

        with seeded(seed, self.device):
            return self._map(model, x, sample, dropout=True)
