"""The forms of the node pages: add, edit, and the small action forms.

Every action form validates its POST like any other form, so hand-made or stale data (an
unknown type, a bad id, a node deleted meanwhile) ends as a message, never as a 500.
"""

from __future__ import annotations

import copy
import re

from django import forms
from django.core.exceptions import ValidationError

from nodes.choices import Transport
from nodes.hostkeys import parse_host_key
from nodes.keys import fingerprint
from nodes.models import Node, Role, username_validator
from nodes.onboarding import clean_from
from sync.actions.results import Act
from sync.audit import parse_since
from sync.inventory import LINE_FORMAT, NodeLine, parse_node_lines
from sync.models import SyncAction
from sync.rights import (
    LOCAL_REFUSED,
    NodeChange,
    delivery_refusals,
    may_manage_panel_host,
    node_change_refusals,
)

# Ids beyond a signed 64-bit integer cannot name a row; refuse them before the database does.
_MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}")


class BootstrapMixin:
    """Bootstrap classes on the widgets, and ``is-invalid`` on the fields that failed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, forms.HiddenInput | forms.MultipleHiddenInput):
                continue
            if isinstance(widget, forms.CheckboxInput | forms.RadioSelect):
                css = "form-check-input"
            elif isinstance(widget, forms.CheckboxSelectMultiple):
                css = "form-check-input"
            elif isinstance(widget, forms.Select):
                css = "form-select"
            else:
                css = "form-control"
            widget.attrs["class"] = css

    def full_clean(self) -> None:
        super().full_clean()
        for name in self.errors:
            if name in self.fields:
                widget = self.fields[name].widget
                widget.attrs["class"] = f"{widget.attrs.get('class', '')} is-invalid".strip()


class RolesField(forms.ModelMultipleChoiceField):
    """Roles by name in the POST, so an unknown role is reported by name."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            queryset=Role.objects.order_by("name"),
            to_field_name="name",
            required=False,
            widget=forms.CheckboxSelectMultiple,
            error_messages={
                "invalid_choice": "Unknown role %(value)s: roles are created on the Roles page.",
            },
            **kwargs,
        )


class HostKeyStepMixin(forms.Form):
    """The hidden fields of the host key confirmation step.

    The first POST scans the key and renders it back in ``confirmed_key`` together with the
    ``host:port`` it came from (``scanned_for``); the second POST must carry both unchanged.
    """

    confirmed_key = forms.CharField(required=False, widget=forms.HiddenInput)
    scanned_for = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_confirmed_key(self) -> str:
        """The confirmed key parsed: it is what gets pinned, so garbage stops here."""
        value = self.cleaned_data.get("confirmed_key", "")
        if not value:
            return ""
        try:
            return parse_host_key(value)
        except ValueError:
            raise ValidationError(
                "The confirmed host key is not an SSH public key; submit the form again to "
                "scan the node's key."
            ) from None

    def confirmed_for(self, host: str, port: int) -> str:
        """The key the admin confirmed for exactly this host and port ('' when none)."""
        if self.cleaned_data.get("scanned_for") != f"{host}:{port}":
            return ""
        return self.cleaned_data.get("confirmed_key", "")


class KeyInstallMixin(forms.Form):
    """The add form's optional one-time password that installs the panel's key.

    Used once, only once the host key shown was confirmed, then forgotten: the field never
    renders its value back, and the view keeps it out of error reports.
    """

    install_login = forms.CharField(
        label="Log in as",
        required=False,
        max_length=32,
        validators=[username_validator],
        help_text="root, the node's SSH user, or a user who may sudo (sudo -S).",
    )
    install_password = forms.CharField(
        label="One-time password",
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}, render_value=False),
        help_text="Sent only to the server that holds the host key you confirm, used once to "
        "install the panel's key, never stored.",
    )
    install_from = forms.CharField(
        label="Only from (optional)",
        required=False,
        max_length=1000,
        help_text='The panel\'s address(es): the key gets from="..." and works from there only.',
    )

    def clean_install_from(self) -> str:
        try:
            return clean_from(self.cleaned_data.get("install_from", ""))
        except ValueError as e:
            raise ValidationError(str(e)) from None


class RightsMixin(forms.ModelForm):
    """Asks ``sync.rights`` whether the acting user may make the change this form describes.

    The rules that need the node's host key (pointing a node at the panel's own server) are
    asked again by the view once the key is scanned (``node_change_refusals`` with it).
    """

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def node_after(self) -> Node:
        """The node as this form would save it (the instance itself is left alone)."""
        node = copy.copy(self.instance)
        for name, value in self.cleaned_data.items():
            if name != "roles" and name in self.fields and hasattr(node, name):
                setattr(node, name, value)
        return node

    def refuse(self, refusals) -> bool:
        """Put ``refusals`` on the form (on their field when it has one); True if any."""
        for refusal in refusals:
            field = refusal.field if refusal.field in self.fields else None
            self.add_error(field, refusal.message)
        return bool(refusals)

    def check_rights(self, change: NodeChange) -> None:
        # No user: nobody's change (a form made without one refuses what needs rights).
        self.refuse(node_change_refusals(self.user, self.node_after(), change))


class NodeAddForm(BootstrapMixin, HostKeyStepMixin, KeyInstallMixin, RightsMixin, forms.ModelForm):
    roles = RolesField()
    port = forms.IntegerField(
        label="SSH port", min_value=1, max_value=65535, initial=22, required=False
    )

    class Meta:
        model = Node
        fields = ["name", "transport", "host", "port", "username", "roles"]
        widgets = {"transport": forms.RadioSelect}
        labels = {"username": "SSH user", "port": "SSH port"}
        help_texts = {
            "name": "Lower-case letters, digits, dots and hyphens, like a host name.",
            "host": "Host name or IP address the panel connects to over SSH.",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["host"].required = False  # required for SSH only (clean)
        self.fields["username"].required = False
        self.fields["transport"].initial = Transport.SSH
        # Only superusers may make the panel manage its own server; others are not offered
        # the choice, and a hand-made POST is refused in clean(). No user: nobody's choice.
        self.may_add_local = self.user is not None and may_manage_panel_host(self.user)
        if not self.may_add_local:
            widget = self.fields["transport"].widget
            widget.choices = [c for c in widget.choices if c[0] != Transport.LOCAL]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("transport") == Transport.LOCAL and not self.may_add_local:
            self.add_error("transport", LOCAL_REFUSED)
        elif data.get("transport") == Transport.LOCAL:
            # The panel's own server: no SSH, whatever the other fields say.
            data["host"], data["port"], data["username"] = "localhost", 22, "root"
            for name in ("host", "port", "username"):
                self.errors.pop(name, None)
        else:
            if not data.get("host") and "host" not in self.errors:
                self.add_error("host", "Enter the host name or address of the SSH node.")
            if data.get("port") is None and "port" not in self.errors:
                data["port"] = 22
            if not data.get("username") and "username" not in self.errors:
                data["username"] = "root"
        if not self.errors:
            self.check_rights(NodeChange(adding=True, roles=tuple(data.get("roles") or ())))
        return data


class KeyCommandForm(BootstrapMixin, forms.Form):
    """Who the one-line command installs the panel's key for, and from where it may log in."""

    user = forms.CharField(
        label="For the user",
        initial="root",
        required=False,
        max_length=32,
        validators=[username_validator],
    )
    only_from = forms.CharField(
        label="Only from (optional)",
        required=False,
        max_length=1000,
        help_text="The panel's address as the node sees it, e.g. 10.0.0.5 or 10.0.0.0/24.",
    )

    def clean_only_from(self) -> str:
        try:
            return clean_from(self.cleaned_data.get("only_from", ""))
        except ValueError as e:
            raise ValidationError(str(e)) from None


class NodeEditForm(BootstrapMixin, HostKeyStepMixin, RightsMixin, forms.ModelForm):
    """Name, roles and maintenance; host, port and user too for SSH nodes."""

    roles = RolesField()
    port = forms.IntegerField(label="SSH port", min_value=1, max_value=65535)
    maintenance = forms.BooleanField(
        required=False,
        help_text="The panel runs nothing on a node in maintenance; waiting work stays queued.",
    )
    stop_running = forms.BooleanField(
        required=False,
        label="Stop a type running now",
        help_text="Turning maintenance on: end the running type now (it is held until retried) "
        "instead of letting it finish.",
    )

    class Meta:
        model = Node
        fields = ["name", "host", "port", "username", "roles"]
        labels = {"username": "SSH user", "port": "SSH port"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.original = {
            "host": self.instance.host,
            "port": self.instance.port,
            "username": self.instance.username,
            "maintenance": self.instance.maintenance,
        }
        self.fields["maintenance"].initial = self.instance.maintenance
        if self.instance.transport == Transport.LOCAL:
            for name in ("host", "port", "username"):
                del self.fields[name]

    def clean(self) -> dict:
        data = super().clean()
        if not self.errors:
            moves = self.address_changed or self.username_changed
            self.check_rights(NodeChange(roles=tuple(data.get("roles") or ()), address=moves))
        return data

    @property
    def address_changed(self) -> bool:
        """Host or port changed: the host key must be scanned and confirmed again."""
        data = self.cleaned_data
        return "host" in self.fields and (
            data.get("host") != self.original["host"] or data.get("port") != self.original["port"]
        )

    @property
    def username_changed(self) -> bool:
        return "username" in self.fields and (
            self.cleaned_data.get("username") != self.original["username"]
        )

    @property
    def maintenance_changed(self) -> bool:
        return self.cleaned_data.get("maintenance") != self.original["maintenance"]


class IdListField(forms.Field):
    """A list of row ids from checkboxes; anything that is not an id is an error."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[int]:
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        ids = []
        for item in value:
            item = str(item).strip()
            # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
            if not _ID.fullmatch(item) or int(item) > _MAX_ID:
                raise ValidationError("The selection holds something that is not a node.")
            ids.append(int(item))
        return ids

    def validate(self, value: list[int]) -> None:
        if self.required and not value:
            raise ValidationError("Select at least one node.")


class BulkActionForm(forms.Form):
    RESYNC = "resync"
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_STOP = "maintenance_stop"
    MAINTENANCE_OFF = "maintenance_off"
    DELETE = "delete"
    GIVE_ROLE = "give_role"
    TAKE_ROLE = "take_role"
    ACTIONS = [
        (RESYNC, "Synchronize again"),
        (MAINTENANCE_ON, "Maintenance on"),
        (MAINTENANCE_STOP, "Maintenance, stopping runs now"),
        (MAINTENANCE_OFF, "Maintenance off"),
        (GIVE_ROLE, "Give the role"),
        (TAKE_ROLE, "Take the role"),
        (DELETE, "Delete"),
    ]
    ROLE_ACTIONS = (GIVE_ROLE, TAKE_ROLE)

    action = forms.ChoiceField(choices=ACTIONS)
    ids = IdListField()
    confirm = forms.BooleanField(required=False)
    # Only for giving and taking a role; by name, so an unknown one is reported by name.
    role = forms.ModelChoiceField(
        queryset=Role.objects.order_by("name"),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "That role does not exist (any more)."},
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("action") in self.ROLE_ACTIONS and not data.get("role"):
            if "role" not in self.errors:
                self.add_error("role", "Choose the role to give or take.")
        return data

    def nodes(self) -> list[Node]:
        """The selected nodes that still exist (one may have been deleted meanwhile)."""
        return list(Node.objects.filter(pk__in=self.cleaned_data["ids"]).order_by("name"))


class ResyncForm(BootstrapMixin, forms.Form):
    """'Synchronize again': every type, or the one chosen."""

    action = forms.ModelChoiceField(
        queryset=SyncAction.objects.order_by("priority", "id"),
        required=False,
        empty_label="All types",
        label="Type",
    )


class MaintenanceForm(forms.Form):
    on = forms.TypedChoiceField(
        choices=[("1", "on"), ("0", "off")], coerce=lambda value: value == "1"
    )
    # Turning it on while a type runs: stop that run now rather than let it finish.
    stop = forms.BooleanField(required=False)


class AcceptKeyForm(forms.Form):
    """The key shown on the confirmation page and the fingerprint the admin confirmed.

    The page carries the whole scanned key, so the POST pins exactly that key (once the node
    proved it holds it) instead of whatever a new scan would return.
    """

    key = forms.CharField(
        max_length=20000,
        widget=forms.HiddenInput,
        error_messages={"required": "The form carried no key: confirm the key the page shows."},
    )
    fingerprint = forms.CharField(max_length=200, widget=forms.HiddenInput)

    def clean_key(self) -> str:
        try:
            return parse_host_key(self.cleaned_data["key"])
        except ValueError:
            raise ValidationError("The key sent with the form is not an SSH public key.") from None

    def clean(self) -> dict:
        data = super().clean()
        key, confirmed = data.get("key"), data.get("fingerprint")
        if key and confirmed and fingerprint(key) != confirmed.strip():
            raise ValidationError(
                f"The key sent with the form ({fingerprint(key)}) is not the one whose "
                f"fingerprint you confirmed ({confirmed.strip()}): nothing was pinned."
            )
        return data


class AuditFilterForm(BootstrapMixin, forms.Form):
    """The audit page's filters; invalid ones are reported and left out."""

    since = forms.CharField(
        required=False, max_length=40, help_text="7d, 12h, 30m, 2w, or a date (UTC)."
    )
    node = forms.CharField(required=False, max_length=100, label="Node")
    action = forms.ChoiceField(
        required=False, choices=[("", "Any")] + [(a, a) for a in sorted(Act.all())]
    )
    actor = forms.CharField(required=False, max_length=150, label="Who")

    def clean_since(self):
        text = self.cleaned_data["since"].strip()
        if not text:
            return None
        try:
            return parse_since(text)
        except ValueError as e:
            raise forms.ValidationError(str(e)) from None

    def cleaned_filters(self) -> dict:
        """The valid filters that were given (``sync.audit.entries`` keywords)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {k: v for k, v in data.items() if v}


class NodeLinesForm(BootstrapMixin, forms.Form):
    """Many SSH nodes at once: lines of ``name host[:port] [user]`` and the roles they all get.

    The confirming POST carries the keys shown (``confirmed``: ``host port key`` each) and
    the lines they were shown for (``scanned``); lines that differ from those are scanned
    and shown again rather than added.
    """

    lines = forms.CharField(
        label="Nodes, one per line",
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        help_text=f"{LINE_FORMAT}: port 22 and user root unless given; "
        "# starts a comment. Example: web1 10.0.0.11 or db1 db1.example.org:2222 admin",
    )
    roles = RolesField()
    confirmed = forms.CharField(required=False, widget=forms.MultipleHiddenInput)
    scanned = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.entries: list[NodeLine] = []

    def clean_confirmed(self) -> dict[tuple[str, int], str]:
        """The keys shown on the confirmation page, by (host, port); garbage is refused."""
        keys = {}
        for item in self.data.getlist("confirmed") if hasattr(self.data, "getlist") else []:
            host, _, rest = item.partition(" ")
            port, _, key = rest.partition(" ")
            try:
                keys[(host, int(port))] = parse_host_key(key)
            except ValueError:
                raise ValidationError(
                    "A confirmed host key is not an SSH public key; submit the lines again "
                    "to scan the keys."
                ) from None
        return keys

    def clean(self) -> dict:
        data = super().clean()
        text = data.get("lines", "")
        self.entries, errors = parse_node_lines(text)
        if errors:
            self.add_error("lines", [str(e) for e in errors[:50]])
        elif "lines" in data and not self.entries:
            self.add_error("lines", f"Give at least one node: {LINE_FORMAT}.")
        if data.get("roles") and (refusals := delivery_refusals(self.user, data["roles"])):
            self.add_error("roles", refusals[0].message)
        return data

    @property
    def confirming(self) -> bool:
        """The lines are the ones whose keys were shown: add, do not scan again."""
        lines = self.cleaned_data.get("lines", "").splitlines()
        return self.cleaned_data.get("scanned", "").splitlines() == lines
