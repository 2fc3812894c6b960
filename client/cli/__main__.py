"""``python -m stateward.client.cli``: the same as the ``stateward`` command."""

from . import main

raise SystemExit(main())
