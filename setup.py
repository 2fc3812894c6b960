"""Map top-level source folders onto the `stateward.*` namespace.

`stateward` itself is a namespace package (no __init__.py). Subpackages are
found with find_packages() per root rather than listed by hand: a subpackage
missing from a hand-written list still imports in an editable install but is
silently absent from the wheel. Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {
    "stateward.v1": "protos/stateward/v1",
    "stateward.server": "server",
    "stateward.storage": "storage",
    "stateward.client": "client",
}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    # Subpackage folders follow from the parent's package_dir entry.
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=ROOTS,
    # Stubs and protos for users; Alembic's ini/template so migrations run from the wheel.
    package_data={"": ["*.pyi", "*.proto", "py.typed", "*.ini", "*.mako"]},
)
