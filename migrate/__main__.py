"""``python -m migrate``: the same as the ``mailmigrate`` console script."""

from migrate.cli.main import main

main()
