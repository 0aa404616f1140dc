"""One training run: data, model, loop, checkpoints, summaries, export and the test evaluation.

    result = train(TrainConfig(arch="tiny", data_dir="demo/tfrecords", epochs=2))

The run directory (DESIGN.md): flags.txt and config.json (written first), TensorBoard events in train/ and
validation/, checkpoints/ (latest few, and best/), history.csv, export/, report/ (the test evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from celeba_gender import archs, distribute, evaluation, export, loop, pipeline, runs, storage
from celeba_gender.augment import AugmentConfig, Augmenter, host_augment_fn
from celeba_gender.errors import UserError
from celeba_gender.feed import Feed
from celeba_gender.pipeline import DataConfig
from celeba_gender.summaries import Summaries

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
AUGMENT_ON = ("device", "host", "none")


class TrainError(UserError):
    """The run cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run (the flags of train.py)."""

    arch: str
    batch: int = 128  # global: each replica gets batch / replicas
    epochs: int = 5
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0  # adamw's decoupled decay / sgd's L2-like decay
    momentum: float = 0.9  # sgd
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0  # cosine only
    label_smoothing: float = 0.0
    data_dir: str = "tfrecords"
    run_dir: str = ""  # "" -> runs_root/<arch>-<time>, or the unfinished run of this same config
    runs_root: str = "runs"
    image_size: tuple[int, int] | None = None  # None: the arch's default
    cache: str = "auto"  # auto | none | memory | <file path>
    augment_on: str = "device"
    augment: AugmentConfig = AugmentConfig()
    precision: str = "auto"
    jit_compile: bool = False
    steps_per_execution: int = 1
    strategy: str = "auto"
    num_cpu_devices: int = 1
    seed: int = 42
    weights: str = "auto"  # auto: imagenet where the arch has it, else none
    trainable_layers: int = -1
    head: str = "auto"
    dropout: float = 0.2
    class_weights: bool = False
    checkpoint_steps: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    keep_checkpoints: int = 3
    profile_steps: tuple[int, int] = (0, 0)
    deterministic: bool = False
    shuffle_buffer: int = pipeline.DEFAULT_SHUFFLE_BUFFER
    evaluate_test: bool = True
    tf_data_service: str = ""
    progress: bool = True


def check_config(c: TrainConfig) -> None:
    """Flag values and combinations that cannot work, refused before any work."""
    problems = []
    if c.batch <= 0 or c.epochs <= 0 or c.lr <= 0 or c.steps_per_execution <= 0:
        problems.append("--batch, --epochs, --lr and --steps_per_execution must be positive")
    if c.optimizer not in OPTIMIZERS:
        problems.append(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if c.lr_schedule not in LR_SCHEDULES:
        problems.append(f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
    if c.augment_on not in AUGMENT_ON:
        problems.append(f"--augment_on must be one of {', '.join(AUGMENT_ON)}")
    if not 0 <= c.label_smoothing < 1:
        problems.append("--label_smoothing must be in [0, 1)")
    if c.warmup_epochs and c.lr_schedule != "cosine":
        problems.append("--warmup_epochs needs --lr_schedule=cosine")
    if c.warmup_epochs >= c.epochs:
        problems.append(f"--warmup_epochs={c.warmup_epochs} must be below --epochs={c.epochs}")
    if c.profile_steps[1] < c.profile_steps[0]:
        problems.append("--profile_steps=START,STOP needs START <= STOP")
    if c.augment_on == "none" and (c.augment.mixup or c.augment.cutmix):
        problems.append("--mixup/--cutmix need augmentation on: drop --augment_on=none")
    if c.strategy == "multi_worker" and c.num_cpu_devices > 1:
        problems.append("--num_cpu_devices is for trying MirroredStrategy on one machine, not with multi_worker")
    if c.strategy == "multi_worker" and not c.run_dir:
        problems.append("--strategy=multi_worker needs --run_dir: every worker must use the same run directory "
                        "(a shared path or a gs:// URL)")
    if problems:
        raise TrainError("; ".join(problems) + ".")


def resolve_weights(config: TrainConfig) -> str:
    """``auto`` -> imagenet for archs that have ImageNet weights, none for the others."""
    if config.weights != "auto":
        return config.weights
    return "imagenet" if archs.get(config.arch).imagenet else "none"


def make_optimizer(config: TrainConfig, steps_per_epoch: int, policy: str) -> keras.optimizers.Optimizer:
    """The optimizer with its learning-rate schedule (and loss scaling for float16)."""
    lr = config.lr
    if config.lr_schedule == "cosine":
        warmup = int(config.warmup_epochs * steps_per_epoch)
        total = config.epochs * steps_per_epoch
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else config.lr, decay_steps=max(total - warmup, 1),
            warmup_target=config.lr if warmup else None, warmup_steps=warmup)
    if config.optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    elif config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay or 1e-4)
    else:
        opt = keras.optimizers.SGD(lr, momentum=config.momentum, weight_decay=config.weight_decay or None)
    if policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def current_lr(optimizer, step: int) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    if isinstance(inner._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        lr = inner._learning_rate(step)
    return float(keras.ops.convert_to_numpy(lr))


def _write_history(run_dir: str, row: dict) -> None:
    path = os.path.join(run_dir, "history.csv")
    new = not tf.io.gfile.exists(path)
    with tf.io.gfile.GFile(path, "a") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(config: TrainConfig, flags_text: str = "") -> dict:
    """Trains (or resumes) one run and returns its summary (also in RUN/summary.json)."""
    check_config(config)
    distribute.split_cpu(config.num_cpu_devices)
    strategy = distribute.make_strategy(config.strategy, config.num_cpu_devices)
    chief = distribute.is_chief(strategy)
    policy = distribute.resolve_precision(config.precision)
    distribute.set_precision(policy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    model_config = archs.ModelConfig(arch=config.arch, image_size=config.image_size, weights=resolve_weights(config),
                                     head=config.head, trainable_layers=config.trainable_layers,
                                     dropout=config.dropout)
    image_size = archs.image_size(model_config)
    data = Feed(DataConfig(config.data_dir, batch=config.batch, cache=config.cache, shuffle_buffer=config.shuffle_buffer,
                           seed=config.seed, deterministic=config.deterministic, class_weights=config.class_weights,
                           data_service=config.tf_data_service), strategy, image_size)
    run_dir = config.run_dir or runs.find_resumable(config.runs_root, config.arch, dataclasses.asdict(config)) \
        or runs.new_run_dir(config.runs_root, config.arch)
    resumed = bool(runs.status(run_dir))
    if chief:
        runs.record(run_dir, config, flags_text)
        runs.set_status(run_dir, runs.RUNNING)

    with strategy.scope():
        model = archs.build_model(model_config)
        augment_layer = Augmenter(config.augment, seed=config.seed, name="augment") \
            if config.augment_on == "device" else None
        optimizer = make_optimizer(config, data.steps_per_epoch, policy)
        optimizer.build(model.core.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        best_var = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
    # Built here, eagerly and outside the strategy scope: tf.data's map may update its random state, not create
    # it. Unseeded, as before: parallel map calls take the draws in no fixed order anyway.
    host_layer = Augmenter(config.augment, name="host_augment") if config.augment_on == "host" else None
    host_augment = host_augment_fn(host_layer) if host_layer is not None else None
    train_loop = loop.TrainLoop(strategy, model.core, optimizer,
                                loop.LoopConfig(config.batch, config.steps_per_execution, config.jit_compile,
                                                config.label_smoothing, model_config.num_classes,
                                                measure_input_wait=not config.deterministic, mixing=config.augment),
                                augment=augment_layer)

    # Checkpoints: every worker saves (saving may need collectives), the chief into the run directory and the
    # others into temporary directories (TF's multi-worker rule); every worker restores the chief's.
    chief_dir = os.path.join(run_dir, "checkpoints")
    ckpt_dir = chief_dir if chief else tempfile.mkdtemp(prefix="ckpt-worker-")
    checkpoint = tf.train.Checkpoint(model=model.core, optimizer=optimizer, epoch=epoch_var, step=step_var,
                                     best=best_var)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
    best_manager = tf.train.CheckpointManager(checkpoint, os.path.join(ckpt_dir, "best"), max_to_keep=1,
                                              checkpoint_name="best")
    latest = tf.train.latest_checkpoint(chief_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("resumed from %s", latest)

    summaries = Summaries(run_dir, enabled=chief)
    trainable, frozen = archs.count_params(model.core)
    if chief and int(epoch_var.numpy()) == 0 and int(step_var.numpy()) == 0:
        summaries.hparams({**{k: v for k, v in dataclasses.asdict(config).items() if not isinstance(v, dict)},
                           "precision_policy": policy, "replicas": strategy.num_replicas_in_sync})
        grid = data.sample_batch()
        if augment_layer is not None or host_layer is not None:
            grid = (augment_layer or host_layer)(grid, training=True)
        summaries.images("train", "augmented_inputs", 0, np.asarray(grid), "training inputs after augmentation")

    header = (f"{config.arch}: {trainable:,} trainable / {frozen:,} frozen parameters, input {image_size[0]}x"
              f"{image_size[1]}, {strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), "
              f"{policy}, batch {config.batch}, {data.steps_per_epoch} steps/epoch, cache {data.cache}, "
              f"augmentation {config.augment_on}")
    print(("resuming " if resumed and latest else "") + f"run {run_dir}\n{header}", flush=True)

    iterator = data.train(host_augment)
    start_epoch = int(epoch_var.numpy())
    interrupted = False
    try:
        for epoch in range(start_epoch, config.epochs):
            row = _train_epoch(config, epoch, data, train_loop, iterator, epoch_var, step_var, manager, summaries,
                               optimizer)
            train_loop.sync_non_trainable()
            probs, labels = train_loop.predict(data.evaluation("validation"))
            metrics = evaluation.compute_metrics(probs, labels, data.class_names)
            val = {"loss": metrics["log_loss"], "accuracy": metrics["accuracy"], "auc": metrics["roc_auc"]}
            epoch_var.assign(epoch + 1)
            step_var.assign(0)
            improved = val["accuracy"] > float(best_var.numpy())
            if improved:
                best_var.assign(val["accuracy"])
            manager.save(checkpoint_number=epoch + 1)
            if improved:
                best_manager.save(checkpoint_number=epoch + 1)
            summaries.scalars("validation", epoch + 1, {k: val[k] for k in ("loss", "accuracy", "auc")})
            summaries.confusion_matrix("validation", epoch + 1, np.asarray(metrics["confusion_matrix"]),
                                       data.class_names)
            row.update({f"val_{k}": round(val[k], 6) for k in ("loss", "accuracy", "auc")})
            if chief:
                _write_history(run_dir, row)
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} | "
                       f"val loss {val['loss']:.4f} acc {val['accuracy']:.4f} auc {val['auc']:.4f} | "
                       f"{row['images_per_sec']:,.0f} img/s, input wait {row['input_wait_fraction']:.0%}"
                       + ("  *best*" if improved else ""))
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as e:
        if data.workers == 1:
            raise
        # A peer died (killed, preempted): collectives fail on the others. The job resumes from the last
        # checkpoint when every worker is started again with the same command (what TFJob/Slurm restarts do).
        raise TrainError(f"a worker of the {data.workers}-worker job stopped responding ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]}). The last checkpoint is in {chief_dir}; start every "
                         "worker again with the same command to resume from it.") from None
    except KeyboardInterrupt:
        interrupted = True
        train_loop.sync_non_trainable()
        manager.save()
        print(f"\ninterrupted: checkpoint saved in {ckpt_dir}; run the same command again to resume.", flush=True)
    finally:
        summaries.close()
    if interrupted:
        if chief:
            runs.set_status(run_dir, runs.RUNNING, note="interrupted")
        raise KeyboardInterrupt

    fingerprint = weights_fingerprint(model.core)  # the same on every worker, or training went wrong
    if not chief:  # the chief alone exports and evaluates
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return {"run_dir": run_dir, "arch": config.arch, "epochs": config.epochs, "chief": False,
                "final_weights_sha256": fingerprint}
    best = tf.train.latest_checkpoint(os.path.join(chief_dir, "best"))
    if best:  # test and export the best validation epoch
        checkpoint.restore(best).expect_partial()
    result = {"run_dir": run_dir, "arch": config.arch, "epochs": config.epochs,
              "best_validation_accuracy": float(best_var.numpy()), "trainable_params": trainable,
              "frozen_params": frozen, "precision": policy, "replicas": strategy.num_replicas_in_sync,
              "workers": data.workers, "final_weights_sha256": fingerprint}
    result["export"] = export.export(export.inference_model(model.core, image_size, augment_layer),
                                     os.path.join(run_dir, "export"), image_size, data.class_names)
    if config.evaluate_test and data.has_test:
        # The full report (evaluate.py's), on the chief alone: no collectives left to wait on.
        report = evaluation.evaluate_run(run_dir, "test", "best" if best else "last")
        result["test"] = {k: report[k] for k in ("count", "accuracy", "accuracy_ci95", "balanced_accuracy",
                                                 "roc_auc", "log_loss", "confusion_matrix", "class_names")}
        result["report"] = evaluation.report_dir(run_dir, "test", report["checkpoint"])
    storage.write_json(os.path.join(run_dir, "summary.json"), result)
    runs.set_status(run_dir, runs.COMPLETE)
    return result


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight's bytes: equal on all workers of a multi-worker run."""
    sha = hashlib.sha256()
    for w in model.weights:
        sha.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return sha.hexdigest()


def _train_epoch(config, epoch, data, train_loop, iterator, epoch_var, step_var, manager, summaries, optimizer):
    """Runs the rest of one epoch (all of it unless resuming mid-epoch); returns its history row."""
    steps = data.steps_per_epoch
    done = int(step_var.numpy())
    totals = None
    train_seconds = 0.0
    bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
               disable=not config.progress, leave=False)
    global_step = epoch * steps + done
    while done < steps:
        n = min(config.steps_per_execution, steps - done)
        summaries.profile(global_step, *config.profile_steps)
        start = time.perf_counter()
        stats = train_loop.train(iterator, n)
        seconds = time.perf_counter() - start
        if not math.isfinite(float(stats["loss_sum"])):
            raise TrainError(f"the training loss became {float(stats['loss_sum'])} at epoch {epoch + 1}, step "
                             f"{done + n}: stopped. The last good checkpoint is kept in {manager.directory}. "
                             "Lower --lr, or use --precision=float32.")
        train_seconds += seconds
        done += n
        global_step += n
        step_var.assign(done)
        totals = stats if totals is None else {k: totals[k] + stats[k] for k in stats}
        if config.checkpoint_steps and global_step % config.checkpoint_steps < n and done < steps:
            train_loop.sync_non_trainable()
            manager.save()
        m = loop.summarize(totals)
        bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}",
                        img_s=f"{n * config.batch / max(seconds, 1e-9):,.0f}")
        bar.update(n)
    bar.close()
    summaries.profile(global_step, *config.profile_steps)
    m = loop.summarize(totals) if totals else {"loss": float("nan"), "accuracy": float("nan"), "auc": float("nan"),
                                               "count": 0}
    row = {"epoch": epoch + 1, "loss": round(m["loss"], 6), "accuracy": round(m["accuracy"], 6),
           "auc": round(m["auc"], 6), "lr": float(f"{current_lr(optimizer, global_step):.6g}"),
           "images_per_sec": round(m["count"] / max(train_seconds, 1e-9), 1),
           "input_wait_fraction": round(float(totals["input_wait"]) / max(train_seconds, 1e-9), 4) if totals else 0.0,
           "train_seconds": round(train_seconds, 2)}
    summaries.scalars("train", epoch + 1, {"loss": m["loss"], "accuracy": m["accuracy"], "auc": m["auc"],
                                           "learning_rate": row["lr"], "images_per_sec": row["images_per_sec"],
                                           "input_wait_fraction": row["input_wait_fraction"]})
    return row


def format_summary(result: dict) -> str:
    """The one-screen summary printed at the end of a run."""
    if result.get("chief") is False:
        return (f"worker done (final weights sha256 {result['final_weights_sha256'][:16]}): the chief writes the summary, "
                f"the export and the report of {result['run_dir']}")
    lines = [f"run {result['run_dir']} ({result['arch']}, {result['epochs']} epochs, {result['precision']}, "
             f"{result['replicas']} replica(s))",
             f"best validation accuracy {result['best_validation_accuracy']:.4f}"]
    test = result.get("test")
    if test:
        names = test["class_names"]
        lo, hi = test["accuracy_ci95"]
        lines.append(f"test: accuracy {test['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}), balanced accuracy "
                     f"{test['balanced_accuracy']:.4f}, ROC-AUC {test['roc_auc']:.4f} on {test['count']:,} images")
        width = max(len(n) for n in names) + 2
        lines.append(" " * (width + 8) + "predicted " + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, test["confusion_matrix"]):
            lines.append(f"{'actual ' + name:>{width + 17}}" + "".join(f"{v:>{width},}" for v in row))
    if "report" in result:
        lines.append(f"report: {result['report']}/report.md (galleries of errors, subgroups, curves)")
    if "export" in result:
        lines.append(f"exported: {result['export']['keras']} and {result['export']['saved_model']}")
    if result.get("workers", 1) > 1:
        lines.append(f"{result['workers']} workers; final weights sha256 {result['final_weights_sha256'][:16]}")
    lines.append(f"tensorboard --logdir={os.path.dirname(result['run_dir']) or '.'}")
    return "\n".join(lines)


def load_summary(run_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)
