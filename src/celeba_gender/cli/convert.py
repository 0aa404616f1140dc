"""make_tfrecords.py: the flags of ConvertConfig -> celeba_gender.convert.converter.convert(), after making the
synthetic CelebA first when ``--synthetic=N`` asks for one (celeba_gender.synthetic.generate.ensure)."""

from __future__ import annotations

import sys

from celeba_gender.cli import config_flags, runner
from celeba_gender.convert.config import ConvertConfig
from celeba_gender.core import worker_pool

config_flags.define(ConvertConfig, __name__)


def main(argv: list[str]) -> None:
    config, _ = config_flags.build(ConvertConfig)
    # Imported now: pandas and scikit-learn take a second or two, which --help and flag errors need not wait for.
    from celeba_gender.convert import converter as convert_lib
    from celeba_gender.synthetic import generate

    try:
        if config.synthetic:
            generate.ensure(convert_lib.find_celeba(config), config.synthetic, config.seed,
                            config.workers or worker_pool.default_workers())
        manifest = convert_lib.convert(config)
    except KeyboardInterrupt:
        print("\nmake_tfrecords: interrupted. Finished shards are kept; run the same command again to resume.",
              file=sys.stderr)
        sys.exit(runner.INTERRUPTED_EXIT)
    print(convert_lib.format_summary(manifest, config.out_dir))


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "make_tfrecords", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.convert
    run()
