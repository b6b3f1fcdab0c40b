"""The bridge's one exception hierarchy; driver errors are translated at the boundary."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises."""


class BridgeClosed(BridgeError):
    """The bridge is not running (not started yet, or shut down)."""


class BridgeUnavailable(BridgeError):
    """The database failed or did not answer in time; the driver's error is chained."""


class NotifyDecodeError(BridgeError):
    """A notification on the channel is not one of ours, or is malformed."""
