"""One training run: its settings (:class:`TrainConfig`) and :func:`train`, which wires the input (feed.py), the
model (archs/), the step (loop.py), the epochs (epochs.py), checkpoints, TensorBoard, the export and the test
evaluation.

    result = train(config_for("tiny", data_dir="demo/tfrecords", epochs=2))

The run directory: flags.txt and config.json (written first), TensorBoard events in train/ and validation/,
checkpoints/ (the latest few, and best/), history.csv, export/, report/ (the test evaluation), summary.json,
test_metrics.json and status.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from celeba_gender.core import locks, options, fileio
from celeba_gender.evaluate import evaluator
from celeba_gender.inputs import pipeline
from celeba_gender.models import registry
from celeba_gender.rundir import directory
from celeba_gender.serve import export
from celeba_gender.train import distribute, step, optimizers
from celeba_gender.inputs.augment import AugmentConfig, Augmenter, host_augment_fn
from celeba_gender.train.checkpoints import Checkpoints, RunState, random_states
from celeba_gender.train.epochs import BEST_METRICS, EpochLoop, Monitor, Schedule
from celeba_gender.core.errors import UserError
from celeba_gender.train.distributed_input import Feed
from celeba_gender.core.options import option
from celeba_gender.inputs.pipeline import DataConfig
from celeba_gender.train.stopping import StopSignals
from celeba_gender.rundir.tensorboard import Summaries

AUGMENT_ON = ("device", "host", "none")
_RECIPE = " (default: the arch's recipe)"


class TrainError(UserError):
    """The run cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run (the flags of train.py)."""

    arch: str = option(help="Architecture (required): the source's five are alexnet, resnet50v2, inceptionv3, "
                       "vgg16, densenet201; also efficientnetv2b0, small (CPU demos), plain4 (reference CNN), tiny "
                       "(smoke tests). Each brings its recipe (optimizer, rate, schedule, epochs...): flags win.",
                       choices=registry.ARCH_NAMES)
    batch: int = option(128, "Global batch size; each replica gets batch / replicas.", lower=1)
    epochs: int = option(5, "Passes over the training split." + _RECIPE, lower=1)
    lr: float = option(1e-4, "Peak learning rate (for the global batch: scale it yourself when you change the batch)."
                       + _RECIPE, lower=1e-12)
    optimizer: str = option("adam", "Optimizer." + _RECIPE, choices=optimizers.OPTIMIZERS)
    weight_decay: float = option(0.0, "Decoupled weight decay of adamw, or sgd's decay; 0 = none (adam takes "
                                 "none: use adamw)." + _RECIPE, lower=0)
    momentum: float = option(0.9, "SGD momentum.", lower=0, upper=1)
    lr_schedule: str = option("constant", "constant or cosine decay to 0, each after --warmup_epochs." + _RECIPE,
                              choices=optimizers.LR_SCHEDULES)
    warmup_epochs: float = option(0.0, "Linear warm-up from 0 to --lr, in epochs." + _RECIPE, lower=0)
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy targets (mixed targets too)."
                                    + _RECIPE, lower=0, upper=0.99)
    data_dir: str = option("tfrecords", "Shard directory written by make_tfrecords.py (local or gs://...).",
                           path=True)
    run_dir: str = option("", "Run directory; default runs_root/<arch>-<time>, or the unfinished run with this same "
                          "configuration (so rerunning a stopped command resumes it).", path=True)
    runs_root: str = option("runs", "Where default run directories go.", path=True)
    image_size: tuple[int, int] | None = option(None, "HEIGHT,WIDTH of the model input; default: the arch's "
                                                "(218,178 for the five; 109,89 for small and plain4).", lower=1)
    cache: str = option("auto", "Decoded-image cache: auto (memory when it fits), none, memory, or a file path prefix "
                        "(its files are named after what they hold).")
    augment_on: str = option("device", "Where the seed's augmentation runs: device (in the replica step, on the "
                             "accelerator), host (tf.data, after batching) or none.", choices=AUGMENT_ON)
    augment: AugmentConfig = AugmentConfig()
    precision: str = option("auto", "auto: mixed_float16 on tensor-core GPUs, else float32.",
                            choices=distribute.PRECISIONS)
    jit_compile: bool = option(False, "XLA-compile the forward/backward pass (augmentation stays outside).")
    steps_per_execution: int = option(1, "Training steps per tf.function call.", lower=1)
    strategy: str = option("auto", "auto: MirroredStrategy with >1 GPU, else default; mirrored; multi_worker: "
                           "MultiWorkerMirroredStrategy from TF_CONFIG or Slurm.", choices=distribute.STRATEGIES)
    num_cpu_devices: int = option(1, "Split the CPU into N logical devices (try MirroredStrategy without GPUs).",
                                  lower=1)
    require_gpu: bool = option(False, "Stop at once when no GPU is visible, instead of training on the CPU.")
    seed: int = option(42, "Seed for weights, shuffling and augmentation.")
    weights: str = option("auto", "auto (imagenet where available, else none), imagenet, none, or a local weights "
                          "file for the backbone.")
    trainable_layers: int = option(-1, "Train only the last N backbone layers (the rest frozen, BatchNorm in "
                                   "inference mode); -1 trains all." + _RECIPE, lower=-1)
    head: str = option("auto", "Classifier head: auto (the arch's: seed for the transfer backbones, fc4096 for "
                       "alexnet, linear for the small CNNs), seed (GAP-1024-256-64-32-2), linear (GAP, dropout, "
                       "dense) or fc4096 (flatten-4096-4096-2).", choices=registry.HEAD_CHOICES)
    dropout: float = option(0.2, "Dropout of the seed and linear heads.", lower=0, upper=0.95)
    class_weights: bool = option(False, "Weight examples so both classes count equally (for shards made with "
                                 "--nobalance).")
    attributes: tuple[str, ...] = option((), "Several CelebA attributes in one model, one sigmoid each: all, or "
                                         "names (e.g. Smiling,Eyeglasses,Male). Empty: the attribute the shards were "
                                         "converted for (one softmax). Convert with --nobalance for this.")
    attribute_weights: str = option("none", "With --attributes: none, or balanced (each attribute's positives "
                                    "weigh negatives/positives of the training split, so rare attributes such as "
                                    "Bald count as much as common ones).", choices=("none", "balanced"))
    best_metric: str = option("auto", "The validation figure that picks the best checkpoint and, with --attributes, "
                              "each attribute's decision threshold: accuracy, balanced_accuracy (means over the "
                              "attributes with --attributes), or auto: balanced_accuracy when the loss is weighted "
                              "(--class_weights, --attribute_weights=balanced), else accuracy.",
                              choices=("auto", *BEST_METRICS))
    log_every_steps: int = option(50, "Report training loss, accuracy, learning rate, images/s and input wait "
                                  "every N steps (TensorBoard and the log), and at each epoch end.", lower=1)
    checkpoint_steps: int = option(0, "Also checkpoint every N steps (0: at the end of each epoch only).", lower=0)
    keep_checkpoints: int = option(3, "Latest checkpoints kept (the best one is kept apart).", lower=1)
    profile_steps: tuple[int, int] | None = option(None, "START,STOP global steps to trace with the TensorFlow "
                                                   "profiler.", lower=0)
    deterministic: bool = option(False, "Deterministic ops and input order (slower; for exact comparisons): a run "
                                 "stopped and resumed ends with the weights of the same run never stopped.")
    shuffle_buffer: int = option(pipeline.DEFAULT_SHUFFLE_BUFFER, "Shuffle buffer (examples).", lower=1)
    tf_data_service: str = option("", "grpc://host:port of a tf.data service dispatcher: its workers read and decode "
                                  "the training data (python -m celeba_gender.cli.data_service ...).")
    evaluate_test: bool = option(True, "Evaluate on the test split at the end (report/, test_metrics.json).")
    test_checkpoint: str = option("best", "The checkpoint tested and exported at the end: best (by --best_metric) "
                                  "or last (what the source study reported).", choices=("best", "last"))
    progress: bool = option(True, "Show a progress bar on a terminal (a log file gets plain lines either way).")
    allow_changed_settings: bool = option(False, "Go on with an unfinished --run_dir although these settings differ "
                                          "from those it recorded (config.json keeps each change); without it such "
                                          "a rerun is refused.")

    def __post_init__(self):
        options.validate(self)
        problems = []
        if self.warmup_epochs >= self.epochs:
            problems.append(f"--warmup_epochs={options.format_value(self.warmup_epochs)} must be below "
                            f"--epochs={self.epochs}")
        if self.optimizer == "adam" and self.weight_decay:
            # Adam would drop it silently while flags.txt records it (and Keras' Adam(weight_decay=) is AdamW).
            problems.append(f"--optimizer=adam applies no weight decay, so --weight_decay="
                            f"{options.format_value(self.weight_decay)} (the arch's recipe's unless a flag sets it) "
                            "would be ignored: use --optimizer=adamw for decoupled weight decay, or --weight_decay=0")
        if self.profile_steps and self.profile_steps[1] < self.profile_steps[0]:
            problems.append("--profile_steps=START,STOP needs START <= STOP")
        if self.augment_on == "none" and (self.augment.mixup or self.augment.cutmix):
            problems.append("--mixup/--cutmix need augmentation on: drop --augment_on=none")
        if self.class_weights and self.attributes:
            problems.append("--class_weights is for one attribute; with --attributes use --attribute_weights=balanced")
        if self.attribute_weights != "none" and not self.attributes:
            problems.append("--attribute_weights needs --attributes")
        if self.deterministic and self.tf_data_service:
            problems.append("--deterministic cannot be combined with --tf_data_service: the service hands files to "
                            "its workers as they ask, in no fixed order")
        policies = self.augment.randaugment or self.augment.random_erasing
        if self.deterministic and self.augment_on == "host" and policies:
            problems.append("--deterministic with --randaugment or --random_erasing needs --augment_on=device: on the "
                            "host their Keras layers draw from one shared state in parallel, in no fixed order")
        if self.strategy == "multi_worker" and self.num_cpu_devices > 1:
            problems.append("--num_cpu_devices is for trying MirroredStrategy on one machine, not with multi_worker")
        if self.strategy == "multi_worker" and not self.run_dir:
            problems.append("--strategy=multi_worker needs --run_dir: every worker must use the same run directory "
                            "(a shared path or a gs:// URL)")
        if problems:
            raise TrainError("; ".join(problems) + ".")

    def model_config(self) -> registry.ModelConfig:
        """How to build this run's model (``weights=auto`` resolved)."""
        weights = self.weights
        if weights == "auto":
            weights = "imagenet" if registry.get(self.arch).imagenet else "none"
        return registry.ModelConfig(arch=self.arch, image_size=self.image_size, weights=weights, head=self.head,
                                 trainable_layers=self.trainable_layers, dropout=self.dropout)

    def resolved_best_metric(self) -> str:
        """--best_metric with ``auto`` resolved (evaluation.best_metric: the rule evaluate.py applies too)."""
        return evaluator.best_metric(dataclasses.asdict(self))

    def data_config(self) -> DataConfig:
        """This run's input settings (the global batch; feed.Feed divides it among workers)."""
        return DataConfig(self.data_dir, batch=self.batch, cache=self.cache, shuffle_buffer=self.shuffle_buffer,
                          seed=self.seed, deterministic=self.deterministic, class_weights=self.class_weights,
                          data_service=self.tf_data_service)


def config_for(arch: str, **settings) -> TrainConfig:
    """The config of ``arch``'s recipe (archs/recipes.py), with ``settings`` overriding it."""
    return options.from_flat(TrainConfig, {**registry.get(arch).recipe(settings.get("epochs")), "arch": arch, **settings})


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight's bytes: equal on all workers of a multi-worker run."""
    sha = hashlib.sha256()
    for w in model.weights:
        sha.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return sha.hexdigest()


def train(config: TrainConfig, sources: dict | None = None, monitor: Monitor | None = None,
          stop: StopSignals | None = None) -> dict:
    """Trains (or resumes) one run and returns its summary (also in RUN/summary.json).

    ``sources``: where each setting came from (recorded in flags.txt and config.json); ``monitor`` receives the
    progress (see epochs.Monitor); ``stop``: signal handling (signals.StopSignals; installed once the strategy
    exists): on SIGTERM or Ctrl-C the run checkpoints the step reached, records the reason in status.json and
    raises loop.Stopped. A run that fails records "failed" and the error.
    """
    monitor = monitor or Monitor()
    distribute.split_cpu(config.num_cpu_devices)
    strategy = distribute.make_strategy(config.strategy, config.num_cpu_devices, config.require_gpu)
    if stop is not None:
        stop.install()
    should_stop = stop or (lambda: None)
    chief = distribute.is_chief(strategy)
    policy = distribute.resolve_precision(config.precision)
    distribute.set_precision(policy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    image_size = registry.image_size(config.model_config())
    feed = Feed(config.data_config(), strategy, image_size, config.attributes)  # checks the shards first
    model_config = dataclasses.replace(config.model_config(), num_classes=len(feed.outputs),
                                       multi_label=feed.multi_label)
    for warning in feed.warnings:
        monitor.note(f"warning: {warning}")
    run_dir = config.run_dir or directory.find_resumable(config.runs_root, config.arch, dataclasses.asdict(config)) \
        or directory.new_run_dir(config.runs_root, config.arch)
    # One run directory, one run: the chief holds its lock (a second launch stops here, before writing
    # anything); the other workers of a multi-worker job take no lock and so are never refused.
    lock = locks.hold(run_dir, "training", "wait for it to finish, or give this run another --run_dir") if chief \
        else contextlib.nullcontext()
    with lock:
        if directory.status(run_dir).get("status") == directory.COMPLETE:
            monitor.note(f"run {run_dir} is complete: nothing to train (its summary follows). Train a new run by "
                         "leaving out --run_dir or naming a new one.")
            return fileio.read_json(fileio.join(run_dir, directory.SUMMARY)) or {"run_dir": run_dir}
        # An unfinished run goes on with the settings it recorded: other ones would change its schedule mid-run
        # and overwrite its record. Checked on every worker (all read the same config.json), before any write.
        recorded = directory.recorded_settings(run_dir)
        changes = directory.changed_settings(recorded, dataclasses.asdict(config)) if recorded is not None else {}
        if changes and not config.allow_changed_settings:
            raise TrainError(f"{run_dir} holds an unfinished run recorded with other settings: "
                             f"{directory.describe_changes(changes)}. Resume it with its own (python train.py "
                             f"--flagfile={fileio.join(run_dir, directory.FLAGS)} --run_dir={run_dir}), give another "
                             "--run_dir for a new run, or add --allow_changed_settings to go on with these.")
        if chief:
            directory.record(run_dir, config, dataclasses.asdict(dataclasses.replace(model_config, image_size=image_size)),
                        feed.outputs, sources, changes)
            directory.set_status(run_dir, directory.RUNNING)
        try:
            return _run(config, strategy, chief, policy, model_config, image_size, feed, run_dir, sources, monitor,
                        should_stop)
        except step.Stopped as stop:
            if chief:
                directory.set_status(run_dir, stop.reason, epochs_done=stop.epoch, steps_done_in_epoch=stop.step,
                                checkpoint=stop.checkpoint)
            raise
        except BaseException as e:
            if chief:
                directory.set_status(run_dir, directory.FAILED, error=f"{type(e).__name__}: {e}"[:2000])
            raise


def _run(config: TrainConfig, strategy, chief: bool, policy: str, model_config: registry.ModelConfig,
         image_size: tuple[int, int], feed: Feed, run_dir: str, sources: dict | None, monitor: Monitor,
         should_stop: Callable[[], str | None]) -> dict:
    with strategy.scope():
        model = registry.build_model(model_config)
        augment_layer = Augmenter(config.augment, seed=config.seed, name="augment") \
            if config.augment_on == "device" else None
        optimizer = optimizers.make_optimizer(
            config.optimizer, config.lr, feed.steps_per_epoch, config.epochs, config.lr_schedule,
            config.warmup_epochs, config.weight_decay, config.momentum, loss_scaling=policy == "mixed_float16")
        optimizer.build(model.core.trainable_variables)
        rows = model_config.num_classes if model_config.multi_label else 1
        # The checkpoint keeps Dropout's and the device augmentation policies' random states; the warp and the
        # mixing draw from (seed, step) instead (loop.LoopConfig.seed).
        state = RunState(step.zero_stats(rows), random_states(model.core, augment_layer))
    # Built here, eagerly and outside the strategy scope: tf.data's map may update its random state, not create
    # it. Its warp draws from (seed, step) (augment.host_augment_fn): parallel map calls run in no fixed order.
    host_layer = Augmenter(config.augment, name="host_augment") if config.augment_on == "host" else None
    positive_weights = None
    if config.attribute_weights == "balanced":
        # negatives / positives: each attribute's positives then weigh as much as its negatives (capped for
        # attributes with almost no positives, whose weights would otherwise swamp the loss).
        positive_weights = tuple(min((1 - r) / max(r, 1e-6), 100.0) for r in feed.positive_rates())
    train_loop = step.TrainLoop(strategy, model.core, optimizer,
                                step.LoopConfig(config.batch, config.steps_per_execution, config.jit_compile,
                                                config.label_smoothing, model_config.num_classes,
                                                measure_input_wait=not config.deterministic, mixing=config.augment,
                                                multi_label=model_config.multi_label,
                                                positive_weights=positive_weights, seed=config.seed),
                                augment=augment_layer)
    checkpoints = Checkpoints(run_dir, chief, model.core, optimizer, state, config.keep_checkpoints)
    resumed_from = checkpoints.restore_latest()
    summaries = Summaries(run_dir, enabled=chief)
    trainable, frozen = registry.count_params(model.core)
    settings = options.flat_values(config)
    monitor.started({
        "run_dir": run_dir, "resumed_from": resumed_from, "arch": config.arch, "trainable": trainable,
        "frozen": frozen, "image_size": image_size, "replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__, "devices": distribute.device_names(strategy), "precision": policy,
        "batch": config.batch, "steps_per_epoch": feed.steps_per_epoch, "cache": feed.cache,
        "augment_on": config.augment_on, "epoch": int(state.epoch.numpy()), "step": int(state.step.numpy()),
        "settings": settings, "sources": sources or {}, "best_metric": config.resolved_best_metric()})
    if chief and resumed_from is None:
        summaries.hparams({**settings, "precision_policy": policy, "replicas": strategy.num_replicas_in_sync})
        grid = feed.sample_batch()
        if augment_layer is not None or host_layer is not None:
            grid = (augment_layer or host_layer)(grid, training=True)
        summaries.images("train", "augmented_inputs", 0, np.asarray(grid), "training inputs after augmentation")

    epochs = EpochLoop(train_loop, feed, state, checkpoints, summaries,
                       Schedule(config.epochs, config.steps_per_execution, config.log_every_steps,
                                config.checkpoint_steps, config.profile_steps or (0, 0)),
                       run_dir, monitor, host_augment_fn(host_layer, config.seed) if host_layer is not None else None,
                       should_stop, best_metric=config.resolved_best_metric())
    try:
        epochs.run()
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as e:
        if feed.workers == 1:
            raise
        # A peer died (killed, preempted): collectives fail on the others. The job resumes from the last
        # checkpoint when every worker is started again with the same command (what TFJob/Slurm restarts do).
        raise TrainError(f"a worker of the {feed.workers}-worker job stopped responding ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]}). The last checkpoint is in {checkpoints.chief_dir}; "
                         "start every worker again with the same command to resume from it.") from None
    finally:
        summaries.close()

    fingerprint = weights_fingerprint(model.core)  # the same on every worker, or training went wrong
    checkpoints.finish()
    if not chief:  # the chief alone exports and evaluates
        return {"run_dir": run_dir, "arch": config.arch, "epochs": config.epochs, "chief": False,
                "final_weights_sha256": fingerprint}
    best = checkpoints.restore_best() if config.test_checkpoint == "best" else None
    metric = config.resolved_best_metric()
    result = {"run_dir": run_dir, "arch": config.arch, "epochs": config.epochs, "best_metric": metric,
              f"best_validation_{metric}": float(state.best.numpy()), "trainable_params": trainable,
              "frozen_params": frozen, "precision": policy, "replicas": strategy.num_replicas_in_sync,
              "workers": feed.workers, "final_weights_sha256": fingerprint, "checkpoint": "best" if best else "last"}
    _stop_if_asked(should_stop)
    thresholds = None
    if feed.multi_label:  # each attribute's decision threshold, chosen on validation for the exported checkpoint
        thresholds = evaluator.validation_thresholds(model.core, config.data_dir, image_size, feed.outputs, metric,
                                                      manifest=feed.manifest)
        result["thresholds"] = dict(zip(feed.outputs, thresholds))
    result["export"] = export.export(model.core, fileio.join(run_dir, "export"), image_size, feed.outputs,
                                     feed.multi_label, thresholds, metric)
    if config.evaluate_test and feed.has_test:
        _stop_if_asked(should_stop)
        # The full report (evaluate.py's), on the chief alone: no collectives left to wait on.
        report = evaluator.evaluate_run(run_dir, "test", result["checkpoint"], thresholds=thresholds)
        result["test"] = evaluator.headline(report)
        result["report"] = evaluator.report_dir(run_dir, "test", report["checkpoint"])
        fileio.write_json(fileio.join(run_dir, directory.TEST_METRICS), result["test"])
    fileio.write_json(fileio.join(run_dir, directory.SUMMARY), result)
    directory.set_status(run_dir, directory.COMPLETE)
    return result


def _stop_if_asked(should_stop: Callable[[], str | None]) -> None:
    """Between the closing steps (export, test evaluation): training is done, a rerun only redoes these."""
    reason = should_stop()
    if reason:
        raise step.Stopped(reason)
