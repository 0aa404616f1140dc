"""The optimizer and its learning-rate schedule, from plain settings.

Under mixed_float16 the optimizer is a ``keras.optimizers.LossScaleOptimizer``, which skips the update of a
step whose gradients are not finite (and halves its loss scale). The schedule then follows the updates applied,
not the steps taken: ``optimizer.iterations`` counts updates, and Keras evaluates the schedule there. That is
kept on purpose: a skipped step changed nothing, so it should spend no warm-up and decay nothing (the skips
are a few, while the scale settles, and the cosine ends that many updates short of 0). What is logged follows
the same rule: :func:`learning_rate` at :func:`updates_applied`, with the skipped steps counted beside it.
"""

from __future__ import annotations

import keras

from celeba_gender.train.config import OPTIMIZERS, OptimizerSettings


def make_optimizer(settings: OptimizerSettings, steps_per_epoch: int,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    """``settings.name`` at peak rate ``settings.lr``: after a linear warm-up from 0 over ``warmup_epochs``,
    constant or a cosine decay to 0 over the rest of the run (``epochs`` of ``steps_per_epoch`` steps).

    ``weight_decay`` is AdamW's decoupled decay or SGD's, as given (0 = none). ``loss_scaling`` wraps the
    optimizer for float16 (dynamic loss scaling).
    """
    s = settings
    rate = s.lr
    warmup = int(s.warmup_epochs * steps_per_epoch)
    if s.schedule == "cosine" or warmup:
        total = s.epochs * steps_per_epoch
        # A "decay" to alpha * lr = lr is constant: Keras' one schedule gives both shapes after its warm-up.
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else s.lr, decay_steps=max(total - warmup, 1),
            warmup_target=s.lr if warmup else None, warmup_steps=warmup, alpha=0.0 if s.schedule == "cosine" else 1.0)
    if s.name == "adam":
        opt = keras.optimizers.Adam(rate)
    elif s.name == "adamw":
        opt = keras.optimizers.AdamW(rate, weight_decay=s.weight_decay)
    elif s.name == "sgd":
        opt = keras.optimizers.SGD(rate, momentum=s.momentum, weight_decay=s.weight_decay or None)
    else:
        raise ValueError(f"unknown optimizer {s.name!r}; choose from {OPTIMIZERS}")
    return keras.optimizers.LossScaleOptimizer(opt) if loss_scaling else opt


def updates_applied(optimizer: keras.optimizers.Optimizer) -> int:
    """The updates the optimizer has applied (its ``iterations``; under loss scaling the steps whose gradients
    were not finite applied none and are not counted). Its schedule is at this point."""
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


def loss_scale(optimizer: keras.optimizers.Optimizer) -> float | None:
    """The current dynamic loss scale of a loss-scaling optimizer; None for any other optimizer."""
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    return float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))


def learning_rate(optimizer: keras.optimizers.Optimizer, step: int) -> float:
    """The learning rate of the optimizer after ``step`` updates (its schedule's value there): pass
    :func:`updates_applied` for the rate it is at."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = inner._learning_rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(schedule(step)))
    return float(keras.ops.convert_to_numpy(inner.learning_rate))


def weight_decay(optimizer: keras.optimizers.Optimizer) -> float:
    """The decay the optimizer applies (0.0 when none): for tests and the run header."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(inner.weight_decay or 0.0)
