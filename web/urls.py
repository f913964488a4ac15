"""URLs of the node pages (names are a contract: templates, tests and redirects use them)."""

from django.urls import path

from web.views import actions, editing, fleet, node

app_name = "nodes"

urlpatterns = [
    path("", fleet.node_list, name="list"),
    path("live/", fleet.node_list_live, name="live"),
    path("add/", editing.node_add, name="add"),
    path("add-many/", editing.node_add_many, name="add_many"),
    path("bulk/", actions.node_bulk, name="bulk"),
    path("<int:pk>/", node.node_detail, name="detail"),
    path("<int:pk>/live/", node.node_detail_live, name="detail_live"),
    path("<int:pk>/edit/", editing.node_edit, name="edit"),
    path("<int:pk>/delete/", actions.node_delete, name="delete"),
    path("<int:pk>/resync/", actions.node_resync, name="resync"),
    path("<int:pk>/retry/", actions.node_retry, name="retry"),
    path("<int:pk>/force/", actions.node_force, name="force"),
    path("<int:pk>/cancel/", actions.node_cancel, name="cancel"),
    path("<int:pk>/skip/", actions.node_skip, name="skip"),
    path("<int:pk>/maintenance/", actions.node_maintenance, name="maintenance"),
    path("<int:pk>/accept-key/", actions.node_accept_key, name="accept_key"),
]
