"""make_tfrecords.py: the flags of ConvertConfig -> celeba_gender.convert.converter.convert()."""

from __future__ import annotations

import sys

from celeba_gender.convert import converter as convert_lib
from celeba_gender.cli import config_flags, runner

config_flags.define(convert_lib.ConvertConfig, __name__)


def main(argv: list[str]) -> None:
    config, _ = config_flags.build(convert_lib.ConvertConfig)
    try:
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
