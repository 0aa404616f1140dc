"""``python -m celeba_gender.cli.data_service dispatcher|worker``: the tf.data service's servers
(celeba_gender.inputs.data_service), for --tf_data_service."""

from __future__ import annotations

import argparse

from celeba_gender.inputs import data_service
from celeba_gender.inputs.data_service import start_dispatcher, start_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=data_service.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
