"""What a checkpoint holds besides the model and optimizer: the run's counters, the epoch's running sums and the
Keras random states, and that a checkpoint written before the last two were recorded still resumes."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from celeba_gender.models import build, registry
from celeba_gender.train import step
from celeba_gender.inputs.augment import Augmenter
from celeba_gender.inputs.config import AugmentConfig
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.train.checkpoints import Checkpoints, RunState, random_states


def _parts():
    model = build.build_model(registry.ModelConfig(arch="tiny")).network
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    augmenter = Augmenter(AugmentConfig(randaugment=True), seed=1)
    return model, optimizer, augmenter


def test_a_checkpoint_restores_the_random_states_and_the_epoch_sums(tmp_path):
    model, optimizer, augmenter = _parts()
    states = random_states(model, augmenter)
    # Dropout's generator, and the augmenter's (its warp's, RandAugment's and its layers'); no weights.
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts and all(any(d.seed_generator.state is v for v in states) for d in dropouts)
    assert any(augmenter.randaugment.generator.state is v for v in states)
    assert not {id(v) for v in states} & {id(w) for w in model.weights}
    state = RunState(step.zero_stats(1), states)
    checkpoints = Checkpoints(RunDirectory(str(tmp_path)), model, optimizer, state)
    sums = {**step.zero_stats(1), "loss_sum": np.float32(3.25), "count": np.float32(48)}
    state.step.assign(3)
    state.keep_sums(sums, 1.5)
    drawn = [v.numpy().copy() for v in states]
    checkpoints.save(3)
    for v in states:
        v.assign(v.numpy() * 0)
    state.keep_sums(None, 0.0)
    assert checkpoints.restore_latest().endswith("ckpt-3")
    assert all(np.array_equal(v.numpy(), d) for v, d in zip(states, drawn))
    restored, seconds = state.restored_sums()
    assert restored["loss_sum"] == np.float32(3.25) and restored["count"] == 48 and seconds == 1.5
    assert restored["loss_sum"].dtype == np.float32  # summed on exactly as an unstopped process sums


def test_a_checkpoint_without_the_sums_and_random_states_still_resumes(tmp_path):
    model, optimizer, augmenter = _parts()
    old = RunState()
    old.step.assign(5)
    tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=old.epoch, step=old.step, best=old.best).save(
        str(tmp_path / "checkpoints" / "ckpt"))
    state = RunState(step.zero_stats(1), random_states(model, augmenter))
    assert Checkpoints(RunDirectory(str(tmp_path)), model, optimizer, state).restore_latest()
    assert int(state.step.numpy()) == 5 and state.restored_sums() == (None, 0.0)  # the row then covers what follows
