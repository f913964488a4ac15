from django.urls import path

from nodes import views

app_name = "nodes"

urlpatterns = [
    # One URL for the page and its htmx-polled rows (the view tells them apart).
    path("", views.node_list, name="list"),
]
