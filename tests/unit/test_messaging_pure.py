from pydantic import BaseModel, ValidationError

from shared.messaging import Topology, describe_error


def test_topology_names_carry_prefix_and_service() -> None:
    t = Topology("hs.", "notifications", (200, 400))
    assert (t.internal, t.public, t.queue, t.dlq) == (
        "hs.internal",
        "hs.public",
        "hs.notifications",
        "hs.notifications.dlq",
    )
    assert t.max_attempts == 3
    assert t.all_queues() == [
        "hs.notifications",
        "hs.notifications.retry.200ms",
        "hs.notifications.retry.400ms",
        "hs.notifications.dlq",
    ]


def test_validation_errors_are_described_without_the_offending_values() -> None:
    class M(BaseModel):
        email: int

    try:
        M(email="secret@example.org")
    except ValidationError as exc:
        text = describe_error(exc)
    assert "email" in text and "secret@example.org" not in text
