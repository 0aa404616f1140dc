"""Flags of train.py -> TrainConfig -> celeba_gender.trainer.train()."""

from __future__ import annotations

import sys

from absl import app, flags, logging

from celeba_gender import archs, distribute, trainer
from celeba_gender.archs.applications import WeightsError
from celeba_gender.augment import AugmentConfig
from celeba_gender.pipeline import DEFAULT_SHUFFLE_BUFFER
from celeba_gender.storage import DataError

flags.DEFINE_enum("arch", None, archs.ARCH_NAMES, "Architecture (required): the source's five are alexnet, "
                  "resnet50v2, inceptionv3, vgg16, densenet201; also efficientnetv2b0, small (CPU demos), "
                  "plain4 (reference CNN), tiny (smoke tests).")
flags.DEFINE_integer("batch", 128, "Global batch size; each replica gets batch / replicas.", lower_bound=1)
flags.DEFINE_integer("epochs", 5, "Passes over the training split.", lower_bound=1)
flags.DEFINE_float("lr", 1e-4, "Peak learning rate (for the global batch; scale it yourself when you change it).")
flags.DEFINE_enum("optimizer", "adam", trainer.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay for adamw (default there 1e-4) and sgd.", lower_bound=0)
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_enum("lr_schedule", "constant", trainer.LR_SCHEDULES, "constant, or cosine decay (with --warmup_epochs).")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up before the cosine decay, in epochs.", lower_bound=0)
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy targets.")
flags.DEFINE_string("data_dir", "tfrecords", "Shard directory written by make_tfrecords.py (local or gs://...).")
flags.DEFINE_string("run_dir", "", "Run directory; default runs_root/<arch>-<time>, or the unfinished run with "
                    "this same configuration (so rerunning a killed command resumes it).")
flags.DEFINE_string("runs_root", "runs", "Where default run directories go.")
flags.DEFINE_list("image_size", [], "HEIGHT,WIDTH of the model input; default: the arch's (218,178 for the five).")
flags.DEFINE_string("cache", "auto", "Decoded-image cache: auto (memory when it fits), none, memory, or a file path.")
flags.DEFINE_enum("augment_on", "device", trainer.AUGMENT_ON, "Where the seed's augmentation runs: device (in "
                  "the replica step, on the accelerator), host (tf.data, after batching) or none.")
flags.DEFINE_bool("idg_quirks", False, "Reproduce ImageDataGenerator's off-centre rotation pivot and swapped "
                  "shift axes on non-square images (the source's exact pixels).")
flags.DEFINE_bool("randaugment", False, "Add RandAugment after the seed's geometric augmentation.")
flags.DEFINE_float("random_erasing", 0.0, "Probability of random erasing per image.", lower_bound=0, upper_bound=1)
flags.DEFINE_float("mixup", 0.0, "MixUp Beta(alpha, alpha); 0 = off.", lower_bound=0)
flags.DEFINE_float("cutmix", 0.0, "CutMix Beta(alpha, alpha); 0 = off.", lower_bound=0)
flags.DEFINE_enum("precision", "auto", distribute.PRECISIONS, "auto: mixed_float16 on tensor-core GPUs, else float32.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the forward/backward pass (augmentation stays outside).")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call.", lower_bound=1)
flags.DEFINE_enum("strategy", "auto", distribute.STRATEGIES, "auto: MirroredStrategy with >1 GPU, else default; "
                  "multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG or Slurm.")
flags.DEFINE_integer("num_cpu_devices", 1, "Split the CPU into N logical devices (try MirroredStrategy without GPUs).",
                     lower_bound=1)
flags.DEFINE_integer("seed", 42, "Seed for weights, shuffling and augmentation.")
flags.DEFINE_string("weights", "auto", "auto (imagenet where available, else none), imagenet, none, or a local "
                    "weights file for the backbone.")
flags.DEFINE_integer("trainable_layers", -1, "Train only the last N backbone layers (the rest frozen, BatchNorm "
                     "in inference mode); -1 trains all.", lower_bound=-1)
flags.DEFINE_enum("head", "auto", archs.HEAD_CHOICES, "Classifier head: auto (the arch's: seed for the transfer "
                  "backbones, fc4096 for alexnet, linear for the small CNNs), seed (GAP-1024-256-64-32-2), linear "
                  "(GAP, dropout, dense) or fc4096 (flatten-4096-4096-2).")
flags.DEFINE_float("dropout", 0.2, "Dropout of the seed and linear heads.", lower_bound=0, upper_bound=0.95)
flags.DEFINE_bool("class_weights", False, "Weight examples so both classes count equally (when not --balance'd).")
flags.DEFINE_integer("checkpoint_steps", 0, "Also checkpoint every N steps (0: at the end of each epoch only).",
                     lower_bound=0)
flags.DEFINE_integer("keep_checkpoints", 3, "Latest checkpoints kept (the best one is kept apart).", lower_bound=1)
flags.DEFINE_list("profile_steps", [], "START,STOP global steps to trace with the TensorFlow profiler.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and input order (slower; for exact comparisons).")
flags.DEFINE_integer("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER, "Shuffle buffer (examples) after the cache.",
                     lower_bound=1)
flags.DEFINE_string("tf_data_service", "", "grpc://host:port of a tf.data service dispatcher: its workers read "
                    "and decode the training data (python -m celeba_gender.data_service ...).")
flags.DEFINE_bool("evaluate_test", True, "Evaluate the best checkpoint on the test split at the end.")
flags.DEFINE_bool("progress", True, "Show progress bars.")

FLAGS = flags.FLAGS


def _pair(values: list[str], name: str) -> tuple[int, int] | None:
    if not values:
        return None
    try:
        a, b = (int(v) for v in values)
    except ValueError:
        raise trainer.TrainError(f"--{name}={','.join(values)}: give two integers, e.g. 218,178.") from None
    return a, b


def config_from_flags() -> trainer.TrainConfig:
    """The frozen config for the parsed flags."""
    augment = AugmentConfig(idg_quirks=FLAGS.idg_quirks, randaugment=FLAGS.randaugment,
                            random_erasing=FLAGS.random_erasing, mixup=FLAGS.mixup, cutmix=FLAGS.cutmix)
    return trainer.TrainConfig(
        arch=FLAGS.arch, batch=FLAGS.batch, epochs=FLAGS.epochs, lr=FLAGS.lr, optimizer=FLAGS.optimizer,
        weight_decay=FLAGS.weight_decay, momentum=FLAGS.momentum, lr_schedule=FLAGS.lr_schedule,
        warmup_epochs=FLAGS.warmup_epochs, label_smoothing=FLAGS.label_smoothing, data_dir=FLAGS.data_dir,
        run_dir=FLAGS.run_dir, runs_root=FLAGS.runs_root, image_size=_pair(FLAGS.image_size, "image_size"),
        cache=FLAGS.cache, augment_on=FLAGS.augment_on, augment=augment, precision=FLAGS.precision,
        jit_compile=FLAGS.jit_compile, steps_per_execution=FLAGS.steps_per_execution, strategy=FLAGS.strategy,
        num_cpu_devices=FLAGS.num_cpu_devices, seed=FLAGS.seed, weights=FLAGS.weights,
        trainable_layers=FLAGS.trainable_layers, head=FLAGS.head, dropout=FLAGS.dropout,
        class_weights=FLAGS.class_weights, checkpoint_steps=FLAGS.checkpoint_steps,
        keep_checkpoints=FLAGS.keep_checkpoints, profile_steps=_pair(FLAGS.profile_steps, "profile_steps") or (0, 0),
        deterministic=FLAGS.deterministic, shuffle_buffer=FLAGS.shuffle_buffer, evaluate_test=FLAGS.evaluate_test,
        tf_data_service=FLAGS.tf_data_service, progress=FLAGS.progress)


def flags_text() -> str:
    """A flagfile that reruns this run: every train.py flag with its value, one per line."""
    own = FLAGS.get_key_flags_for_module(sys.modules[__name__])
    lines = [f.serialize() for f in sorted(own, key=lambda f: f.name) if f.value is not None]
    return "# written by train.py; rerun with: python train.py --flagfile=<this file>\n" + "\n".join(lines) + "\n"


# Problems with the input or the flags: one line, no traceback.
USER_ERRORS = (trainer.TrainError, archs.ArchError, WeightsError, DataError,
               distribute.DistributeError)


def main(argv: list[str]) -> None:
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress output
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value).")
    try:
        config = config_from_flags()
        result = trainer.train(config, flags_text())
    except USER_ERRORS as e:
        print(f"train: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    print(trainer.format_summary(result))


def run() -> None:
    """Console-script entry point."""
    flags.mark_flag_as_required("arch")
    app.run(main)


if __name__ == "__main__":  # python -m celeba_gender.cli.train
    run()
