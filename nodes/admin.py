"""The admin's titles.

The nodes' and the roles' admin are registered by the synchronization (``sync.node_admin``):
who may change a node there is a rights rule of ``sync.rights`` (the panel's own server, the
data its roles carry), every change goes through its actions (``sync.actions``), and this app
never imports the one above it.
"""

from django.contrib import admin

admin.site.site_header = "Cluster panel"
admin.site.site_title = "Cluster panel"
admin.site.index_title = "Administration"
