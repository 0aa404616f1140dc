"""The settings of one training run: :class:`TrainConfig`, the flags of train.py, declared once (type, default,
help, choices, bounds), and the small views of it that each part of the run takes (the model's, the input's).
Importable without TensorFlow, so that ``train.py --help`` and flag errors cost no TensorFlow start-up.

    config = config_for("tiny", data_dir="demo/tfrecords", epochs=2)   # the arch's recipe, then these
"""

from __future__ import annotations

import dataclasses

from celeba_gender.core import options
from celeba_gender.core.errors import UserError
from celeba_gender.core.options import option
from celeba_gender.inputs.config import DEFAULT_SHUFFLE_BUFFER, AugmentConfig, DataConfig
from celeba_gender.models import registry
from celeba_gender.tasks.base import BEST_METRICS, best_metric

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
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
    optimizer: str = option("adam", "Optimizer." + _RECIPE, choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "Decoupled weight decay of adamw, or sgd's decay; 0 = none (adam takes "
                                 "none: use adamw)." + _RECIPE, lower=0)
    momentum: float = option(0.9, "SGD momentum.", lower=0, upper=1)
    lr_schedule: str = option("constant", "constant or cosine decay to 0, each after --warmup_epochs." + _RECIPE,
                              choices=LR_SCHEDULES)
    warmup_epochs: float = option(0.0, "Linear warm-up from 0 to --lr, in epochs." + _RECIPE, lower=0)
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy targets (mixed targets too)."
                                    + _RECIPE, lower=0, upper=0.99)
    data_dir: str = option("tfrecords", "Shard directory written by the converter (make_tfrecords; local or "
                           "gs://...).",
                           path=True)
    run_dir: str = option("", "Run directory; default runs_root/<arch>-<time>, or the unfinished run with this same "
                          "configuration (so rerunning a stopped command resumes it).", path=True)
    runs_root: str = option("runs", "Where default run directories go.", path=True)
    image_size: tuple[int, int] | None = option(None, "HEIGHT,WIDTH of the model input; default: the arch's "
                                                "(218,178 for the five; 109,89 for small and plain4).", lower=1)
    cache: str = option("auto", "Decoded-image cache: auto (memory when it fits), none, memory, or a file path prefix "
                        "(its files are named after what they hold).")
    augment_on: str = option("device", "Where the source's augmentation runs: device (in the replica step, on the "
                             "accelerator), host (tf.data, after batching) or none.", choices=AUGMENT_ON)
    augment: AugmentConfig = AugmentConfig()
    precision: str = option("auto", "auto: mixed_float16 on tensor-core GPUs, else float32.",
                            choices=PRECISIONS)
    jit_compile: bool = option(False, "XLA-compile the forward/backward pass (augmentation stays outside).")
    steps_per_execution: int = option(1, "Training steps per tf.function call.", lower=1)
    strategy: str = option("auto", "auto: MirroredStrategy with >1 GPU, else default; mirrored; multi_worker: "
                           "MultiWorkerMirroredStrategy from TF_CONFIG or Slurm.", choices=STRATEGIES)
    num_cpu_devices: int = option(1, "Split the CPU into N logical devices (try MirroredStrategy without GPUs).",
                                  lower=1)
    require_gpu: bool = option(False, "Stop at once when no GPU is visible, instead of training on the CPU.")
    seed: int = option(42, "Seed for weights, shuffling and augmentation.")
    weights: str = option("auto", "auto (imagenet where available, else none), imagenet, none, or a local weights "
                          "file for the backbone.")
    trainable_layers: int = option(-1, "Train only the last N backbone layers (the rest frozen, BatchNorm in "
                                   "inference mode); -1 trains all." + _RECIPE, lower=-1)
    head: str = option("auto", "Classifier head: auto (the arch's: source for the transfer backbones, fc4096 for "
                       "alexnet, linear for the small CNNs), source (GAP-1024-256-64-32-2), linear (GAP, dropout, "
                       "dense) or fc4096 (flatten-4096-4096-2).", choices=registry.HEAD_CHOICES)
    dropout: float = option(0.2, "Dropout of the source and linear heads.", lower=0, upper=0.95)
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
    shuffle_buffer: int = option(DEFAULT_SHUFFLE_BUFFER, "Shuffle buffer (examples).", lower=1)
    tf_data_service: str = option("", "grpc://host:port of a tf.data service dispatcher: its workers read and decode "
                                  "the training data (python -m celeba_gender.cli.data_service ...).")
    evaluate_test: bool = option(True, "Evaluate on the test split at the end (report/, test_metrics.json).")
    test_checkpoint: str = option("best", "The checkpoint tested and exported at the end: best (by --best_metric) "
                                  "or last (what the source study reported).", choices=("best", "last"))
    tflite: str = option("float32", "export/model.tflite, the model for TensorFlow Lite runtimes (phones, edge "
                         "devices): its weights as float32, float16 (half the file) or dynamic_int8 (a quarter, "
                         "int8 weights); none: no TensorFlow Lite file.",
                         choices=("float32", "float16", "dynamic_int8", "none"))
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
        if self.image_size:
            try:  # here, not when the model is built: before weights are downloaded or TensorFlow is imported
                registry.image_size(self.model_config())
            except registry.ArchError as e:
                problems.append(str(e).rstrip("."))
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

    def model_config(self, task=None) -> registry.ModelConfig:
        """How to build this run's model (``weights=auto`` resolved; the outputs and their activation the
        ``task``'s when given)."""
        weights = self.weights
        if weights == "auto":
            weights = "imagenet" if registry.get(self.arch).imagenet else "none"
        config = registry.ModelConfig(arch=self.arch, image_size=self.image_size, weights=weights, head=self.head,
                                      trainable_layers=self.trainable_layers, dropout=self.dropout)
        if task is not None:
            config = dataclasses.replace(config, outputs=task.num_outputs, activation=task.activation)
        return config

    def optimizer_settings(self) -> OptimizerSettings:
        """The optimizer's and its schedule's settings (train.optimizers.make_optimizer)."""
        return OptimizerSettings(self.optimizer, self.lr, self.epochs, self.lr_schedule, self.warmup_epochs,
                                 self.weight_decay, self.momentum)

    def schedule(self) -> Schedule:
        """When the epoch loop logs, checkpoints and profiles, and what picks the best epoch."""
        return Schedule(self.epochs, self.steps_per_execution, self.log_every_steps, self.checkpoint_steps,
                        self.profile_steps or (0, 0), self.resolved_best_metric())

    def resolved_best_metric(self) -> str:
        """--best_metric with ``auto`` resolved (tasks.base.best_metric: the rule evaluate.py applies too)."""
        return best_metric(dataclasses.asdict(self))

    def data_config(self, task=None) -> DataConfig:
        """This run's input settings (the global batch; train.distributed_input divides it among workers)."""
        return DataConfig(self.data_dir, batch=self.batch, cache=self.cache, shuffle_buffer=self.shuffle_buffer,
                          seed=self.seed, deterministic=self.deterministic, data_service=self.tf_data_service,
                          task=task)

    @property
    def weighs_loss(self) -> bool:
        """Whether the loss weighs examples from the training split's statistics (class or positive weights)."""
        return self.class_weights or self.attribute_weights == "balanced"


def config_for(arch: str, **settings) -> TrainConfig:
    """The config of ``arch``'s recipe (models/recipes.py), with ``settings`` overriding it."""
    recipe = registry.get(arch).recipe(settings.get("epochs"))
    return options.from_flat(TrainConfig, {**recipe, "arch": arch, **settings})


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """The optimizer and its learning-rate schedule (see TrainConfig's options of the same names)."""

    name: str
    lr: float
    epochs: int
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When things happen in the epoch loop, in steps, and which validation figure picks the best epoch."""

    epochs: int
    steps_per_execution: int = 1
    log_every_steps: int = 100
    checkpoint_steps: int = 0  # 0: at epoch ends only
    profile_steps: tuple[int, int] = (0, 0)
    best_metric: str = "accuracy"

    def __post_init__(self):
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {BEST_METRICS}, got {self.best_metric!r}")
