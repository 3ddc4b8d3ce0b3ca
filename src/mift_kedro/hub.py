"""Fail fast, with the offline alternative named, when the Hugging Face Hub is out of reach."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached; the message says what to use instead."""


def check_hub_reachable(what: str, offline_hint: str, timeout: float = 5.0) -> None:
    """Raise :class:`HubUnreachableError` within ``timeout`` seconds if the Hub is unreachable.

    ``huggingface_hub`` retries for tens of seconds before giving up; one TCP connect tells
    the same thing at once.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise HubUnreachableError(f"HF_HUB_OFFLINE is set, so {what} cannot be downloaded: {offline_hint}")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise HubUnreachableError(
            f"The Hugging Face Hub ({endpoint.hostname}) is unreachable ({exc}), so {what} "
            f"cannot be downloaded: {offline_hint}"
        ) from None
