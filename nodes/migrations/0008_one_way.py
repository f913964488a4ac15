"""The inventory stops referring to the synchronization (docs/ARCHITECTURE.md, "Apps").

- ``node.current_action_id`` stays the same column but is a plain id: the foreign key
  constraint goes, the field is no longer a relation to ``sync.SyncAction``.
- The data the types carry (packages, files, users, services) moves to the ``sync`` app, with
  its type: the tables stay as they are, only Django's idea of their app changes
  (``sync/migrations/0003``).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("nodes", "0007_node_conditions"),
        ("sync", "0002_syncrun_acted_by_current_command"),
    ]

    operations = [
        migrations.AlterField(
            model_name="node",
            name="current_action",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="sync.syncaction",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="node", name="current_action"),
                migrations.AddField(
                    model_name="node",
                    name="current_action_id",
                    field=models.BigIntegerField(blank=True, editable=False, null=True),
                ),
                migrations.DeleteModel(name="Service"),
                migrations.DeleteModel(name="ManagedFile"),
                migrations.DeleteModel(name="ManagedUser"),
                migrations.DeleteModel(name="Package"),
            ],
            database_operations=[],
        ),
    ]
