"""The three pipelines of the study, connected only through the data catalog."""

from functools import partial, update_wrapper


def bind(func, **kwargs):
    """``func`` with keyword arguments fixed, keeping its name for Kedro's node labels."""
    return update_wrapper(partial(func, **kwargs), func)
