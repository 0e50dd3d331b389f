"""Channel adapters, and the Python producer API (`publish`, `Publisher`).

    from touchstream.producers import publish
    publish(events, bootstrap="kafka:9092")

Adapters map each source's payloads to `TouchpointEvent`s through one mechanism
(`producers.mapping`); `producers.providers` lists the webhook providers.
"""

from touchstream.producers.publisher import AsyncPublisher, Delivery, Publisher, publish, route

__all__ = ["AsyncPublisher", "Delivery", "Publisher", "publish", "route"]
