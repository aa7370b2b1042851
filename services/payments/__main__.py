"""``python -m payments``: serves it on HTTP_HOST:HTTP_PORT, as its settings say;
``python -m payments reseal``: re-seals its data after a key rotation."""

from payments.settings import PaymentsSettings
from payments.store import SEALED
from shared.serve import service_command

if __name__ == "__main__":
    service_command("payments.app:create_app", PaymentsSettings, SEALED)()
