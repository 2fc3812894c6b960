"""The ``stateward`` command line.

One module per command group, each with a ``register(commands)`` function
that adds its subcommands; ``_main.GROUPS`` lists them. Handlers take a
:class:`~stateward.client.cli._context.Context` and return an exit code;
errors they let escape become one line on stderr (see ``_failures.py``).

* ``server.py``  ``stateward serve`` / ``stateward db``, delegated to the server
* ``agents.py``  ``stateward agents ...``
* ``_args.py``   argument types shared by groups (JSON documents, labels)
* ``_format.py`` tables, detail views and JSON output
"""

from ._main import main

__all__ = ["main"]
