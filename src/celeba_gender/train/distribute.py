"""The distribution strategy and the mixed-precision policy, chosen from flags and the hardware present.

``auto`` strategy: MirroredStrategy when more than one GPU is visible, else the default strategy.
``auto`` precision: mixed_float16 on GPUs with tensor cores (compute capability 7.0+), float32 elsewhere;
bfloat16 only when asked (on this project's CPUs it ran 1.4-2x faster than float32; float16 6-12x slower).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import keras
import tensorflow as tf

from celeba_gender.core.errors import UserError
from celeba_gender.core.invocation import LAUNCHER, command, style

from celeba_gender.train.config import PRECISIONS, STRATEGIES


class DistributeError(UserError):
    """A strategy or precision that cannot be used here; the message says why and what to do."""


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into ``num_devices`` logical devices, so MirroredStrategy can be tried without GPUs.
    Must run before TensorFlow initialises its devices (before any op)."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        raise DistributeError(f"--num_cpu_devices={num_devices} must be set before TensorFlow starts: {e}")


def _cluster_resolver():
    """TF_CONFIG (Kubernetes TFJob, Vertex AI, our launch_local) or, without it, Slurm's environment."""
    if os.environ.get("TF_CONFIG"):
        try:
            config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise DistributeError(f"TF_CONFIG is not valid JSON ({e}).")
        if "cluster" not in config or "task" not in config:
            raise DistributeError("TF_CONFIG needs 'cluster' and 'task' entries, e.g. "
                                  '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                                  '"task": {"type": "worker", "index": 0}}.')
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if os.environ.get("SLURM_JOB_ID"):
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    train = command("train").removeprefix("python ") if style() == LAUNCHER else command("train")
    raise DistributeError("--strategy=multi_worker needs TF_CONFIG (or a Slurm job): every worker runs the same "
                          f"{command('train')} command with its own TF_CONFIG. To try it on one machine: "
                          f"python -m celeba_gender.cli.launch_local --workers=2 -- {train} ...")


NO_GPU_FIX = ("install the GPU build with `pip install -e '.[gpu]'` (or `make gpu`; it needs the NVIDIA driver) and "
              "check with `python -c \"import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))\"`")


def make_strategy(name: str, num_cpu_devices: int = 1, require_gpu: bool = False) -> tf.distribute.Strategy:
    """The strategy for ``--strategy``; see the module docstring for ``auto``.

    Without a visible GPU: ``require_gpu`` stops at once, and so does ``mirrored`` unless the CPU was split into
    logical devices to try it (``num_cpu_devices``); otherwise one warning says the run trains on the CPU.
    """
    if name not in STRATEGIES:
        raise DistributeError(f"--strategy={name}: choose one of {', '.join(STRATEGIES)}.")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        if require_gpu:
            raise DistributeError(f"--require_gpu: TensorFlow sees no GPU on this machine. To train on NVIDIA GPUs, "
                                  f"{NO_GPU_FIX}.")
        if name == "mirrored" and num_cpu_devices <= 1:
            raise DistributeError(f"--strategy=mirrored needs GPUs and TensorFlow sees none. To use them, "
                                  f"{NO_GPU_FIX}; to try MirroredStrategy on a CPU add --num_cpu_devices=2.")
        logging.warning("No GPU visible: training on the CPU. For NVIDIA GPUs install the [gpu] extra (README, Set "
                        "up); --require_gpu makes this an error.")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 or num_cpu_devices > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_cluster_resolver())


def _tensor_core_gpus() -> bool:
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if capability < (7, 0):
            return False
    return bool(gpus)


def resolve_precision(name: str) -> str:
    """The Keras dtype policy name for ``--precision``."""
    if name not in PRECISIONS:
        raise DistributeError(f"--precision={name}: choose one of {', '.join(PRECISIONS)}.")
    if name == "auto":
        return "mixed_float16" if _tensor_core_gpus() else "float32"
    if name == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        logging.warning("mixed_float16 without a GPU runs 6-12x slower than float32 on CPUs; "
                        "use --precision=mixed_bfloat16 or float32 there.")
    return name


def set_precision(policy: str) -> None:
    """Sets the global Keras dtype policy (before the model is built)."""
    keras.mixed_precision.set_global_policy(policy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes summaries, checkpoints and exports (always true on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    spec = resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Machines (worker processes) in the job: 1 unless MultiWorkerMirroredStrategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(spec.get("worker", [])) + len(spec.get("chief", []))


def device_names(strategy: tf.distribute.Strategy) -> list[str]:
    """What this process trains on, for the run header: e.g. ["GPU:0 NVIDIA A100-SXM4-40GB", "GPU:1 ..."]."""
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: TensorFlow's placement, the first GPU if any, else the CPU
        gpus = tf.config.list_logical_devices("GPU")
        devices = [gpus[0].name if gpus else "/device:CPU:0"]
    names = []
    for device in devices:
        spec = tf.DeviceSpec.from_string(device)
        label = f"{spec.device_type}:{spec.device_index or 0}"
        if spec.device_type == "GPU":
            gpus = tf.config.list_physical_devices("GPU")
            index = spec.device_index or 0
            if index < len(gpus):
                details = tf.config.experimental.get_device_details(gpus[index])
                label += f" {details.get('device_name', '')}".rstrip()
        names.append(label)
    return names or ["CPU:0"]


@dataclasses.dataclass(frozen=True)
class Session:
    """Where and how this process trains: the strategy, whether it is the chief (the worker that writes the run's
    records), and the precision policy in force."""

    strategy: tf.distribute.Strategy
    chief: bool
    policy: str


def start(strategy: str, num_cpu_devices: int = 1, require_gpu: bool = False, precision: str = "auto") -> Session:
    """Splits the CPU when asked, creates the strategy and sets the precision policy (before any model exists)."""
    split_cpu(num_cpu_devices)
    made = make_strategy(strategy, num_cpu_devices, require_gpu)
    policy = resolve_precision(precision)
    set_precision(policy)
    return Session(made, is_chief(made), policy)
