"""``node.is_panel_host``: the panel's own server, which only superusers change.

Local nodes are the panel's own server by definition: they get the flag here. SSH nodes whose
pinned key is one of the machine's own host keys get it when the web server or a cluster
starts (``sync.panelhost``).
"""

from django.db import migrations, models


def flag_local_nodes(apps, schema_editor):
    Node = apps.get_model("nodes", "Node")
    Node.objects.using(schema_editor.connection.alias).filter(transport="local").update(
        is_panel_host=True
    )


class Migration(migrations.Migration):
    dependencies = [
        ("nodes", "0009_node_panel_key"),
    ]

    operations = [
        migrations.AddField(
            model_name="node",
            name="is_panel_host",
            field=models.BooleanField(
                default=False,
                help_text=(
                    "The panel runs on this node: only superusers may change it or give it roles."
                ),
                verbose_name="panel's own server",
            ),
        ),
        migrations.RunPython(flag_local_nodes, migrations.RunPython.noop),
    ]
