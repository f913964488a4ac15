from django.core.management.base import BaseCommand

from nodes.keys import panel_public_key


class Command(BaseCommand):
    help = "Print the panel's public SSH key, to add to authorized_keys on each node."

    def handle(self, *args, **options):
        self.stdout.write(panel_public_key())
