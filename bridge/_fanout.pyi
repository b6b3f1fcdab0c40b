from bridge.events import Event
from bridge.subscription import Subscription

def deliver(event: Event, subs: tuple[Subscription, ...], /) -> None: ...
