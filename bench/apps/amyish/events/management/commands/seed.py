import datetime

from django.core.management.base import BaseCommand

from events.models import Event

COUNTRIES = ["GB", "US", "DE", "FR", "PL", "ZA", "AU", "NZ", "CA", "BR"]


class Command(BaseCommand):
    help = "Replaces all events with N deterministic rows (default 400)."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=400)

    def handle(self, *args, rows, **options):
        Event.objects.all().delete()
        base = datetime.date(2020, 1, 6)
        Event.objects.bulk_create(
            Event(
                slug=f"{base + datetime.timedelta(days=3 * i):%Y-%m-%d}-host{i % 37}-{i}",
                host=f"Host institution {i % 37}",
                venue=f"Room {i % 11}, Building {i % 7}",
                country=COUNTRIES[i % len(COUNTRIES)],
                start=base + datetime.timedelta(days=3 * i),
                end=base + datetime.timedelta(days=3 * i + 1),
                attendance=(i * 7) % 40,
                url=f"https://example.org/workshops/{i}/",
                completed=i % 3 == 0,
            )
            for i in range(rows)
        )
        self.stdout.write(f"seeded {Event.objects.count()} events")
