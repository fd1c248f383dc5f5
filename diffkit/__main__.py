"""``python -m diffkit``: the ``diffkit`` command."""

from diffkit.cli.main import main

raise SystemExit(main())
