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
from celeba_gender.core.invocation import command
from celeba_gender.evaluate import evaluator
from celeba_gender.models import build, registry
from celeba_gender.rundir import directory
from celeba_gender.serve import export
from celeba_gender.train import distribute, step, optimizers
from celeba_gender.inputs.augment import Augmenter, host_augment_fn
from celeba_gender.train.checkpoints import Checkpoints, RunState, random_states
from celeba_gender.train.config import TrainConfig, TrainError
from celeba_gender.train.epochs import EpochLoop, Monitor, Schedule
from celeba_gender.train.distributed_input import Feed
from celeba_gender.train.stopping import StopSignals
from celeba_gender.rundir.tensorboard import Summaries

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
                             f"{directory.describe_changes(changes)}. Resume it with its own "
                             f"({command('train')} "
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
        model = build.build_model(model_config)
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
    trainable, frozen = build.count_params(model.core)
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
                                     feed.multi_label, thresholds, metric, tflite=config.tflite)
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
