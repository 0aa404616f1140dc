"""CelebA gender (and any CelebA attribute) training engine for TensorFlow 2 / Keras 3.

Layers, lowest first. A module imports from its own sub-package and from sub-packages of lower layers only,
never upward and never sideways within a layer (tests/test_architecture.py checks it, lazy imports included):

    0  core/                      errors, options, locks, worker processes, progress, file I/O (no TensorFlow)
    1  shards/                    the on-disk contract: attribute names, record schema, TFRecord codec, manifest
    2  convert/ synthetic/        CelebA -> shards; a synthetic CelebA (neither imports TensorFlow)
    2  models/ tasks/             the architecture registry; what the labels are (one class, or attributes)
    3  rundir/ inputs/            the run directory; shards -> batches (decode, pipeline, augmentation)
    4  serve/                     the export, predictions on photos, TTA, Grad-CAM
    5  evaluate/                  a split's metrics -> report, figures, galleries
    6  train/                     one run: config, step, epoch loop, stopping, checkpoints, distributed input
    7  study/                     grids of train.py runs and their tables
    8  cli/                       the commands: flags -> configs -> one library call each

One training run through them (``python train.py --arch=small``): ``cli/train`` parses the flags into a
``train.config.TrainConfig`` and calls ``train.trainer.train``, which picks the strategy (``train.distribute``),
reads the shards' manifest (``shards.manifest``) and asks ``tasks`` what the labels are; ``train.distributed_input``
splits the input across workers and builds ``inputs.pipeline``'s datasets (``inputs.decode``, the augmentation
of ``inputs.augment``); ``models.registry`` builds the network the task needs; ``train.step`` runs the compiled
step, ``train.epochs`` the epochs (validation through the task's metrics, ``train.checkpoints``,
``train.stopping`` on SIGTERM); ``rundir`` records the settings, status, history and TensorBoard events; at the
end ``serve.export`` writes the model and ``evaluate.evaluator`` the test report.
"""

__version__ = "0.1.0"
