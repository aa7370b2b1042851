"""``python -m web``: serves the pages on HTTP_HOST:HTTP_PORT, as its settings say."""

from shared.serve import service_command
from web.settings import WebSettings

if __name__ == "__main__":
    service_command("web.app:create_app", WebSettings)()
