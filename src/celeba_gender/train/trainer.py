"""One training run, start to end: :func:`train` reads as the run's story.

    result = train(config_for("tiny", data_dir="demo/tfrecords", epochs=2))

Where each part lives: the settings (train.config), the strategy and precision (train.distribute), what the
labels are (tasks), the input split across workers (train.distributed_input, inputs.pipeline), the model
(models), the compiled step (train.step), the epochs (train.epochs), checkpoints (train.checkpoints), stopping
on a signal (train.stopping), the run directory and its records (rundir), the export (serve.export) and the
test evaluation (evaluate.evaluator).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from celeba_gender.core import options
from celeba_gender.evaluate import evaluator
from celeba_gender.evaluate.predictions import Context, Trained, predict_split
from celeba_gender.inputs.augment import Augmenter, host_augment_fn
from celeba_gender.models import build, registry
from celeba_gender.rundir import directory
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.rundir.tensorboard import Summaries
from celeba_gender.serve import export
from celeba_gender.shards import shard_dir
from celeba_gender.tasks import kinds
from celeba_gender.tasks.base import Task
from celeba_gender.train import distribute, optimizers, stopping
from celeba_gender.train.checkpoints import Checkpoints, RunState, random_states
from celeba_gender.train.config import TrainConfig, TrainError
from celeba_gender.train.distributed_input import DistributedInput
from celeba_gender.train.epochs import EpochLoop, LoopParts
from celeba_gender.train.monitor import Monitor
from celeba_gender.train.step import Parts, StepConfig, TrainStep, zero_stats


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight's bytes: equal on all workers of a multi-worker run."""
    sha = hashlib.sha256()
    for w in model.weights:
        sha.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return sha.hexdigest()


def train(config: TrainConfig, sources: dict | None = None, monitor: Monitor | None = None,
          stop: stopping.StopSignals | None = None) -> dict:
    """Trains (or resumes) one run and returns its summary (also in RUN/summary.json).

    ``sources``: where each setting came from (recorded in flags.txt and config.json); ``monitor`` receives the
    progress (train.monitor.Monitor); ``stop``: signal handling (installed once the strategy exists): on SIGTERM
    or Ctrl-C the run checkpoints the step reached, records the reason in status.json and raises
    stopping.Stopped. A run that fails records "failed" and the error.
    """
    # The dtype policy is process-wide: a mixed-precision run must not leave later models of the caller (a
    # notebook, a study, a test) built in float16.
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(config, sources, monitor or Monitor(), stop)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config: TrainConfig, sources: dict | None, monitor: Monitor, stop: stopping.StopSignals | None) -> dict:
    session = distribute.start(config.strategy, config.num_cpu_devices, config.require_gpu, config.precision)
    if stop is not None:
        stop.install()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    data, task = _input_and_task(config, session)  # checks the shards first
    for warning in task.shard_warnings(data.manifest):
        monitor.note(f"warning: {warning}")
    run = directory.choose(config.runs_root, config.arch, dataclasses.asdict(config), config.run_dir,
                           writer=session.chief)
    with run.lock():  # one run directory, one run: a second launch stops here, before writing anything
        if run.complete:
            monitor.note(f"run {run.path} is complete: nothing to train (its summary follows). Train a new run by "
                         "leaving out --run_dir or naming a new one.")
            return run.summary() or {"run_dir": run.path}
        # Checked on every worker (all read the same config.json), before any write.
        changes = run.check_settings(dataclasses.asdict(config), config.allow_changed_settings)
        model_config = dataclasses.replace(config.model_config(task), image_size=data.image_size)
        if session.chief:
            run.record(config, {"model": dataclasses.asdict(model_config), "task": task.to_record()}, sources,
                       changes)
        with run.running():
            built = _build(config, session, model_config, task, data)
            resumed = _Checkpointed(built, run, config.keep_checkpoints)
            _announce(config, session, data, resumed, monitor, sources)
            _train_epochs(config, resumed, data, monitor, stop or (lambda: None))
            return _finish(config, resumed, data, stop or (lambda: None))


def _input_and_task(config: TrainConfig, session: distribute.Session) -> tuple[DistributedInput, Task]:
    """The run's input (checked against the manifest) and what its labels are, weighed as the settings ask."""
    manifest = shard_dir.read_manifest(config.data_dir)
    task = kinds.for_run(manifest, config.attributes)
    data = DistributedInput(config.data_config(task), session.strategy, registry.image_size(config.model_config()),
                            manifest)
    # The weights come from the training split's statistics; the labels the input reads stay as they are.
    return data, task.weighted(data) if config.weighs_loss else task


@dataclasses.dataclass(frozen=True)
class _Built:
    """What one process trains with."""

    session: distribute.Session
    model: build.Model
    step: TrainStep
    state: RunState
    host_layer: keras.layers.Layer | None


def _build(config: TrainConfig, session: distribute.Session, model_config: registry.ModelConfig, task: Task,
           data: DistributedInput) -> _Built:
    """The model, optimizer, counters and compiled step, made in the strategy's scope."""
    with session.strategy.scope():
        model = build.build_model(model_config)
        augment = Augmenter(config.augment, seed=config.seed, name="augment") if config.augment_on == "device" \
            else None
        optimizer = optimizers.make_optimizer(config.optimizer_settings(), data.steps_per_epoch,
                                              loss_scaling=session.policy == "mixed_float16")
        optimizer.build(model.network.trainable_variables)
        # The checkpoint keeps Dropout's and the device augmentation policies' random states; the warp and the
        # mixing draw from (seed, step) instead (StepConfig.seed).
        state = RunState(zero_stats(task.score_rows), random_states(model.network, augment))
    # Built here, eagerly and outside the strategy scope: tf.data's map may update its random state, not create
    # it. Its warp draws from (seed, step) (augment.host_augment_fn): parallel map calls run in no fixed order.
    host_layer = Augmenter(config.augment, name="host_augment") if config.augment_on == "host" else None
    step = TrainStep(session.strategy, Parts(model.network, optimizer, task, augment), StepConfig.of(config))
    return _Built(session, model, step, state, host_layer)


class _Checkpointed:
    """A built run with its checkpoints, restored to the latest one when there is one, and its TensorBoard
    writers (the writer's only: one set of event files)."""

    def __init__(self, built: _Built, run: RunDirectory, keep: int):
        self.built, self.run = built, run
        self.checkpoints = Checkpoints(run, built.model.network, built.step.optimizer, built.state, keep)
        self.resumed_from = self.checkpoints.restore_latest()
        self.summaries = Summaries(run.path, enabled=run.writer)


def _announce(config: TrainConfig, session: distribute.Session, data: DistributedInput, resumed: _Checkpointed,
              monitor: Monitor, sources: dict | None) -> None:
    """The run's header for the monitor; for a new run, its settings and a grid of augmented inputs for
    TensorBoard."""
    built, state, strategy = resumed.built, resumed.built.state, session.strategy
    trainable, frozen = build.count_params(built.model.network)
    settings = options.flat_values(config)
    monitor.started({
        "run_dir": resumed.run.path, "resumed_from": resumed.resumed_from, "arch": config.arch,
        "trainable": trainable, "frozen": frozen, "image_size": data.image_size,
        "replicas": strategy.num_replicas_in_sync, "strategy": type(strategy).__name__,
        "devices": distribute.device_names(strategy), "precision": session.policy, "batch": config.batch,
        "steps_per_epoch": data.steps_per_epoch, "cache": data.cache, "augment_on": config.augment_on,
        "epoch": int(state.epoch.numpy()), "step": int(state.step.numpy()), "settings": settings,
        "sources": sources or {}, "best_metric": config.resolved_best_metric()})
    if session.chief and resumed.resumed_from is None:
        summaries = resumed.summaries
        summaries.hparams({**settings, "precision_policy": session.policy,
                           "replicas": strategy.num_replicas_in_sync})
        grid = data.sample_batch()
        layer = built.step.augment or built.host_layer
        if layer is not None:
            grid = layer(grid, training=True)
        summaries.images("train", "augmented_inputs", 0, np.asarray(grid), "training inputs after augmentation")


def _train_epochs(config: TrainConfig, resumed: _Checkpointed, data: DistributedInput, monitor: Monitor,
                  should_stop: Callable[[], str | None]) -> None:
    """The remaining epochs; a peer's death under MultiWorkerMirroredStrategy becomes one line."""
    built, summaries = resumed.built, resumed.summaries
    host = host_augment_fn(built.host_layer, config.seed) if built.host_layer is not None else None
    parts = LoopParts(built.step, data, built.state, resumed.checkpoints, resumed.run, summaries, host)
    try:
        EpochLoop(parts, config.schedule(), monitor, should_stop).run()
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as e:
        if data.workers == 1:
            raise
        # A peer died (killed, preempted): collectives fail on the others. The job resumes from the last
        # checkpoint when every worker is started again with the same command (what TFJob/Slurm restarts do).
        raise TrainError(f"a worker of the {data.workers}-worker job stopped responding ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]}). The last checkpoint is in "
                         f"{resumed.checkpoints.chief_dir}; start every worker again with the same command to resume "
                         "from it.") from None
    finally:
        summaries.close()


def _finish(config: TrainConfig, resumed: _Checkpointed, data: DistributedInput,
            should_stop: Callable[[], str | None]) -> dict:
    """After the last epoch: the chief restores the tested checkpoint, settles the task's decisions on the
    validation split, exports, evaluates the test split and records the summary."""
    built, run = resumed.built, resumed.run
    fingerprint = weights_fingerprint(built.model.network)  # the same on every worker, or training went wrong
    resumed.checkpoints.finish()
    result = {"run_dir": run.path, "arch": config.arch, "epochs": config.epochs, "final_weights_sha256": fingerprint}
    if not run.writer:  # the chief alone exports and evaluates
        return {**result, "chief": False}
    best = resumed.checkpoints.restore_best() if config.test_checkpoint == "best" else None
    metric = config.resolved_best_metric()
    trainable, frozen = build.count_params(built.model.network)
    result.update({"best_metric": metric, f"best_validation_{metric}": float(built.state.best.numpy()),
                   "trainable_params": trainable, "frozen_params": frozen, "precision": built.session.policy,
                   "replicas": built.session.strategy.num_replicas_in_sync, "workers": data.workers,
                   "checkpoint": "best" if best else "last"})
    stopping.stop_if_asked(should_stop)
    trained = Trained(built.model.network, built.step.task, config.arch, data.image_size, run.read_config())
    context = Context(run, config.data_dir, data.manifest)
    if trained.task.tunes_decisions:  # e.g. each attribute's threshold, chosen on validation for this checkpoint
        validation = predict_split(trained, context, "validation")
        trained = dataclasses.replace(trained, task=trained.task.tuned(validation.probs, validation.labels, metric))
    result["task"] = trained.task.to_record()
    result["export"] = export.export(built.model.network, run.export_dir, data.image_size, trained.task,
                                     config.tflite)
    if config.evaluate_test and data.has_test:
        stopping.stop_if_asked(should_stop)
        # The full report (evaluate.py's), on the chief alone: no collectives left to wait on.
        report = evaluator.evaluate_run(run, evaluator.EvaluationOptions(checkpoint=result["checkpoint"]), trained)
        result["test"] = evaluator.headline(report)
        result["report"] = run.report_dir("test", report["checkpoint"])
    run.finish(result)
    return result
