"""The ``stateward`` command line.

One module per command group, each with a ``register(commands)`` function
that adds its subcommands; ``_main.GROUPS`` lists them. Handlers take a
:class:`~stateward.client.cli._context.Context` and return an exit code;
errors they let escape become one line on stderr (see ``_failures.py``).

* ``server.py``  ``stateward serve`` / ``stateward db``, delegated to the server
* ``agents.py``  ``stateward agents ...``
* ``state.py``   ``stateward state get|put|patch|history|clear|migrate``
* ``runs.py``    ``stateward runs list|show|retry``
* ``events.py``  ``stateward events list|tail``
* ``checkpoints.py``  ``stateward checkpoints ...``: create, upload, download, restore, prune
* ``recovery.py``  ``stateward recover``, ``stateward gc``, ``stateward archive create|show``
* ``_args.py``   argument types shared by groups (JSON documents, labels)
* ``_format.py`` tables, detail views and JSON output
* ``_progress.py`` the progress bar of uploads, downloads and migrations
"""

from ._main import main

__all__ = ["main"]
