"""``python -m notifications``: serves it on HTTP_HOST:HTTP_PORT, as its settings say;
``python -m notifications reseal``: re-seals its data after a key rotation."""

from notifications.settings import NotificationsSettings
from notifications.store import SEALED
from shared.serve import service_command

if __name__ == "__main__":
    service_command("notifications.app:create_app", NotificationsSettings, SEALED)()
