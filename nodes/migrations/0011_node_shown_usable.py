"""The node's stored truth: ``shown`` (the word its Status cell leads with) and ``usable``."""

from django.db import migrations, models
from django.db.models import Q

from nodes.truth import truth_columns


def fill_truth(apps, schema_editor):
    """Existing nodes get their word and usability by the rule (``nodes.truth``). Whether
    their work can go on is the synchronization's to say, which this app's migrations may not
    read: taken as yes here, corrected by the engine at the node's next change (the health
    probe brings one within a minute)."""
    Node = apps.get_model("nodes", "Node")
    Node.objects.update(**truth_columns(can_run=Q(pk__isnull=False)))


class Migration(migrations.Migration):

    dependencies = [
        ('nodes', '0010_node_is_panel_host'),
    ]

    operations = [
        migrations.AddField(
            model_name='node',
            name='shown',
            field=models.CharField(choices=[('ready', 'Ready'), ('synchronizing', 'Synchronizing'), ('installing', 'Installation in progress'), ('waiting', 'Waiting'), ('host-key-changed', 'Host key changed'), ('unreachable', 'Unreachable'), ('maintenance', 'Maintenance'), ('stuck', 'Stuck'), ('failing', 'Failing')], db_index=True, default='ready', editable=False, max_length=20),
        ),
        migrations.AddField(
            model_name='node',
            name='usable',
            field=models.BooleanField(db_index=True, default=True, editable=False),
        ),
        migrations.RunPython(fill_truth, migrations.RunPython.noop),
    ]
