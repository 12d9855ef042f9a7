"""``python -m tollhouse``: the ``tollhouse`` command."""

from tollhouse.cli.main import main

main()
