"""Pages for the fleet's managed data: roles, packages, files, users and services.

One small generic base serves all five (in the spirit of NetBox's object views): a ``kind``
(``web.data.kinds``) says what a model's pages show and which form edits it, and four views
(``web.data.views``: list, detail, edit, delete) serve every kind. Every save and delete is
an action (``sync.actions.save_data`` / ``delete_data``), asked first as a dry run so the
confirmation says what will happen on the nodes, counted by the watches themselves.
"""
