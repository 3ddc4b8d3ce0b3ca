"""Where a run's outputs are: the file a catalog dataset wrote for one version.

Every dataset a ``kedro run`` saves with ``versioned: true`` goes to
``<filepath>/<version>/<file name>``, and all of them share the run's save version (a
timestamp), so one version string names one run's outputs. Experiment tracking
(:mod:`mift_kedro.tracking`) and the results export (:mod:`mift_kedro.results`) both find files
this way, from the catalog configuration rather than from a list of paths of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dataset_config(catalog: Any, name: str) -> dict[str, Any]:
    """The resolved catalog entry of ``name`` (declared, or from a ``{pattern}`` entry)."""
    resolver = catalog.config_resolver
    return resolver.config.get(name) or resolver.resolve_pattern(name)


def dataset_file(catalog: Any, name: str, version: str | None, root: Path | str = ".") -> Path | None:
    """The file ``name`` wrote in the run of ``version`` (the plain path when the dataset is not
    versioned), or None for a dataset without a file (in memory). Relative paths are taken
    from ``root``, the project directory."""
    config = dataset_config(catalog, name)
    filepath = config.get("filepath") or config.get("path")
    if not filepath:
        return None
    path = Path(str(filepath))
    if not path.is_absolute():
        path = Path(root) / path
    if config.get("versioned"):
        if not version:
            raise ValueError(f"{name} is versioned: give the run's version")
        return path / version / path.name
    return path


def versions(catalog: Any, name: str, root: Path | str = ".") -> list[str]:
    """The versions of ``name`` on disk, oldest first (Kedro's version strings sort by time)."""
    if not dataset_config(catalog, name).get("versioned"):
        return []
    folder = dataset_file(catalog, name, "_", root).parent.parent  # <filepath>/<version>/<name>
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / folder.name).exists())
