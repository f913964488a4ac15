"""URLs of the node pages (names are a contract: templates, tests and redirects use them)."""

from django.urls import path

from web import views

app_name = "nodes"

urlpatterns = [
    path("", views.node_list, name="list"),
    path("live/", views.node_list_live, name="live"),
    path("add/", views.node_add, name="add"),
    path("bulk/", views.node_bulk, name="bulk"),
    path("<int:pk>/", views.node_detail, name="detail"),
    path("<int:pk>/live/", views.node_detail_live, name="detail_live"),
    path("<int:pk>/edit/", views.node_edit, name="edit"),
    path("<int:pk>/delete/", views.node_delete, name="delete"),
    path("<int:pk>/resync/", views.node_resync, name="resync"),
    path("<int:pk>/retry/", views.node_retry, name="retry"),
    path("<int:pk>/force/", views.node_force, name="force"),
    path("<int:pk>/cancel/", views.node_cancel, name="cancel"),
    path("<int:pk>/skip/", views.node_skip, name="skip"),
    path("<int:pk>/maintenance/", views.node_maintenance, name="maintenance"),
    path("<int:pk>/accept-key/", views.node_accept_key, name="accept_key"),
]
