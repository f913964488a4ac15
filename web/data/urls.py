"""URLs of the data pages: the same five per kind (``data:<kind>_list``, ``_add``, ``_detail``,
``_edit``, ``_delete``), beside the Cluster nodes page (``/roles/``, ``/files/``...)."""

from django.urls import path

from web.data.kinds import KINDS
from web.data.views import ObjectDeleteView, ObjectEditView, ObjectListView, ObjectView

app_name = "data"

urlpatterns = []
for slug, kind in KINDS.items():
    urlpatterns += [
        path(f"{slug}/", ObjectListView.as_view(kind=kind), name=f"{slug}_list"),
        path(f"{slug}/add/", ObjectEditView.as_view(kind=kind), name=f"{slug}_add"),
        path(f"{slug}/<int:pk>/", ObjectView.as_view(kind=kind), name=f"{slug}_detail"),
        path(f"{slug}/<int:pk>/edit/", ObjectEditView.as_view(kind=kind), name=f"{slug}_edit"),
        path(
            f"{slug}/<int:pk>/delete/", ObjectDeleteView.as_view(kind=kind), name=f"{slug}_delete"
        ),
    ]
