"""TensorFlow's tf.data service: move JPEG decoding off the training machines when it is the bottleneck.

Start one dispatcher and any number of workers (each a CPU machine that can read the shards):

    python -m celeba_gender.cli.data_service dispatcher --port=5050
    python -m celeba_gender.cli.data_service worker --dispatcher=dispatcher-host:5050 --port=5051

then train with ``--tf_data_service=grpc://dispatcher-host:5050``. The service workers read, parse and
decode; the trainer shuffles, batches and feeds the model. Files are handed out dynamically, so each pass
reads every example once however many service workers there are.
"""

from __future__ import annotations

import tensorflow as tf


def start_dispatcher(port: int = 0, work_dir: str | None = None) -> tf.data.experimental.service.DispatchServer:
    """A dispatcher on ``port`` (0: any free port); its ``target`` is the --tf_data_service address."""
    config = tf.data.experimental.service.DispatcherConfig(port=port, work_dir=work_dir,
                                                           fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int = 0) -> tf.data.experimental.service.WorkerServer:
    """A worker serving the dispatcher at ``host:port`` (a grpc:// prefix is accepted)."""
    address = dispatcher.split("://", 1)[-1]
    return tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address, port=port))
