"""The node pages, one module per part (``web/urls.py`` maps each URL to its view):

- ``fleet``: the Cluster nodes list, its live endpoint, its rows and counts;
- ``node``: a node's page and its live endpoint;
- ``actions``: what operators do to nodes (resync, retry, force, cancel, skip, maintenance,
  accept a host key, delete, bulk actions);
- ``editing``: adding and editing a node, with the host key steps;
- ``audit``: the audit trail page;
- ``shortcuts``: the node by its id, its URL, the way back after an action.

Views stay thin: the actions (``sync.actions``) change everything, with the acting user and
an audit entry; the forms
validate, ``nodes.access`` decides who may act, ``web.polling`` runs the live refresh.
"""
