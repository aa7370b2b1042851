"""``python -m registration``: serves it on HTTP_HOST:HTTP_PORT, as its settings say;
``python -m registration reseal``: re-seals its data after a key rotation."""

from registration.settings import RegistrationSettings
from registration.store import SEALED
from shared.serve import service_command

if __name__ == "__main__":
    service_command("registration.app:create_app", RegistrationSettings, SEALED)()
