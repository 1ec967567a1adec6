"""``python -m fedsim.cli ...``: the ``fedsim`` command without its console script."""

from fedsim.cli import main

main()
