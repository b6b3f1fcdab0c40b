"""PostgreSQL → in-process subscribers: LISTEN, catch-up from the log, fan-out, presence.

No HTTP in here. The contract is in docs/INTERNALS.md ("Bridge API").
"""

from bridge.config import BridgeConfig
from bridge.core import Bridge
from bridge.direct import Direct, Gate
from bridge.errors import BridgeClosed, BridgeError, BridgeUnavailable
from bridge.events import Control, CutOff, Event, Reset
from bridge.finish import query_connection
from bridge.presence import Presence
from bridge.subscription import Subscription

__all__ = [
    "Bridge",
    "BridgeClosed",
    "BridgeConfig",
    "BridgeError",
    "BridgeUnavailable",
    "Control",
    "CutOff",
    "Direct",
    "Event",
    "Gate",
    "Presence",
    "Reset",
    "Subscription",
    "query_connection",
]
