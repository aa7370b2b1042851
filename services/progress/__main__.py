"""``python -m progress``: serves it on HTTP_HOST:HTTP_PORT, as its settings say;
``python -m progress reseal``: re-seals its data after a key rotation."""

from progress.settings import ProgressSettings
from progress.store import SEALED
from shared.serve import service_command

if __name__ == "__main__":
    service_command("progress.app:create_app", ProgressSettings, SEALED)()
