from django.db import migrations
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce


def count_desyncs(apps, schema_editor):
    """Each node's stored desynchronization count, from the rows it has now."""
    Node = apps.get_model("nodes", "Node")
    Node2Sync = apps.get_model("sync", "Node2Sync")
    rows = Node2Sync.objects.filter(node=OuterRef("pk")).order_by().values("node")
    counted = rows.annotate(n=Count("pk")).values("n")
    Node.objects.update(
        pending_count=Coalesce(Subquery(counted, output_field=IntegerField()), 0)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("nodes", "0013_node_facts_columns_pending_count"),
        ("sync", "0012_run_tally"),
    ]

    operations = [
        migrations.RunPython(count_desyncs, migrations.RunPython.noop, elidable=True),
    ]
