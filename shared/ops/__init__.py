"""Operator tooling behind the ``ops`` command: queues, dead letters, outboxes, traces.

Each module does one thing and returns plain data (dataclasses, dicts) that
``shared.cli`` renders as rich tables or JSON; nothing here prints.

- :mod:`shared.ops.settings`: what the tool reads from the environment.
- :mod:`shared.ops.queues`: queue figures from the RabbitMQ management API, or from
  passive declarations when the API cannot be reached.
- :mod:`shared.ops.deadletters`: list, show, replay and purge a dead-letter queue.
- :mod:`shared.ops.outbox`: pending outbox events and stuck relay claims per service.
- :mod:`shared.ops.status`: ``ops status``: everything above plus health, and the verdict.
- :mod:`shared.ops.trace`: one registration followed across the four services.
- :mod:`shared.ops.redact`: personal fields out of whatever is shown.
"""
