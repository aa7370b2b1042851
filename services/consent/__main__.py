"""``python -m consent``: serves it on HTTP_HOST:HTTP_PORT, as its settings say;
``python -m consent reseal``: re-seals its data after a key rotation."""

from consent.settings import ConsentSettings
from consent.store import SEALED
from shared.serve import service_command

if __name__ == "__main__":
    service_command("consent.app:create_app", ConsentSettings, SEALED)()
