"""TensorFlow's tf.data service: move JPEG decoding off the training machines when it is the bottleneck.

Start one dispatcher and any number of workers (each a CPU machine that can read the shards):

    python -m celeba_gender.inputs.data_service dispatcher --port=5050
    python -m celeba_gender.inputs.data_service worker --dispatcher=dispatcher-host:5050 --port=5051

then train with ``--tf_data_service=grpc://dispatcher-host:5050``. The service workers read, parse and
decode; the trainer shuffles, batches and feeds the model. Files are handed out dynamically, so each pass
reads every example once however many service workers there are.
"""

from __future__ import annotations

import argparse

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    d = sub.add_parser("dispatcher", help="start the dispatcher")
    d.add_argument("--port", type=int, default=5050)
    d.add_argument("--work_dir", default=None, help="journal directory (makes the dispatcher restartable)")
    w = sub.add_parser("worker", help="start a worker")
    w.add_argument("--dispatcher", required=True, help="host:port of the dispatcher")
    w.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.role == "dispatcher":
        server = start_dispatcher(args.port, args.work_dir)
        print(f"tf.data service dispatcher at {server.target}: train with --tf_data_service={server.target}",
              flush=True)
    else:
        server = start_worker(args.dispatcher, args.port)
        print(f"tf.data service worker on port {args.port or 'auto'} serving {args.dispatcher}", flush=True)
    server.join()


if __name__ == "__main__":
    main()
