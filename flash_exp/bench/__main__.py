"""``python -m flash_exp.bench``: see :mod:`flash_exp.bench.cli`."""

from flash_exp.bench.cli import main

main()
