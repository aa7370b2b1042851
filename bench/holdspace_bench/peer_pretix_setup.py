"""Text the pretix peer (``peer.py``) writes into its work dir: pretix's configuration file
and the Django script that creates the benchmark's events. Both run in pretix's own
virtual environment, never imported here."""

from __future__ import annotations

ORGANIZER = "bench"

CONFIG = """\
[pretix]
instance_name=bench
url={url}
datadir={datadir}
ecb_rates=off

[django]
secret={secret}
debug=off

[database]
backend=postgresql
name={db_name}
user=postgres
host=127.0.0.1
port={db_port}

[mail]
host=127.0.0.1
port=1
"""

# Run as ``python setup_events.py SLUG:SEATS [SLUG:SEATS ...]`` with PRETIX_CONFIG_FILE set.
# Creates the organizer "bench" (once), per argument an event with one product (a seat,
# 10 EUR) and one quota of SEATS, and a team with every permission and its API token;
# prints one line per event: TOKEN=<token> ITEM=<id> QUOTA=<id> EVENT=<slug>.
SCRIPT = f"""\
import datetime
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pretix.settings")
import django

django.setup()
from decimal import Decimal

from django.utils.timezone import now
from django_scopes import scopes_disabled
from pretix.base.models import Event, Item, Organizer, Quota, Team

ORGANIZER = {ORGANIZER!r}

with scopes_disabled():
    org, _ = Organizer.objects.get_or_create(slug=ORGANIZER, defaults={{"name": "Bench"}})
    team, _ = Team.objects.get_or_create(
        organizer=org,
        name="bench-api",
        defaults=dict(all_events=True, all_event_permissions=True, all_organizer_permissions=True),
    )
    token = team.tokens.first() or team.tokens.create(name="bench")
    for arg in sys.argv[1:]:
        slug, seats = arg.split(":")
        ev = Event.objects.create(
            organizer=org,
            name="Bench " + slug,
            slug=slug,
            currency="EUR",
            date_from=now() + datetime.timedelta(days=30),
            live=True,
        )
        ev.set_defaults()
        ev.settings.invoice_generate = "False"
        item = Item.objects.create(
            event=ev, name="Seat", default_price=Decimal("10.00"), active=True
        )
        quota = Quota.objects.create(event=ev, name="Seats", size=int(seats))
        quota.items.add(item)
        print(f"TOKEN={{token.token}} ITEM={{item.pk}} QUOTA={{quota.pk}} EVENT={{ev.slug}}")
"""
