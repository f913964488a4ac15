"""The forms of the data pages: the models' own validation, Bootstrap's looks, and what the
acting user may not touch (a file's ``secret`` mark without ``view_secret``) shown disabled.

The forms only describe the change; ``sync.actions.save_data`` saves it (a role's nodes too).
"""

from __future__ import annotations

from django import forms

from nodes.models import Node, Role
from sync.rights import may_view_secrets
from sync.synchronizers.files import ManagedFile, ManagedFileForm
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser
from web.forms import BootstrapMixin


def _checkboxes(field: forms.Field) -> None:
    field.widget = forms.CheckboxSelectMultiple(choices=field.widget.choices)


class DataForm(BootstrapMixin, forms.ModelForm):
    """A data row's form for ``user``: many-to-many links as checkboxes."""

    def __init__(self, *args, user=None, **kwargs) -> None:
        self.user = user
        super().__init__(*args, **kwargs)
        for name in ("roles", "files", "nodes"):
            if name in self.fields:
                _checkboxes(self.fields[name])
        # BootstrapMixin ran before the widgets were swapped: checkboxes get theirs again.
        for field in self.fields.values():
            if isinstance(field.widget, forms.CheckboxSelectMultiple):
                field.widget.attrs["class"] = "form-check-input"


class RoleForm(DataForm):
    """A role and the nodes that have it (saved by the action, with the rights a node's own
    role change meets)."""

    nodes = forms.ModelMultipleChoiceField(
        queryset=Node.objects.order_by("name"),
        required=False,
        help_text="The nodes that have this role receive everything it carries.",
    )

    class Meta:
        model = Role
        fields = ("name",)
        help_texts = {"name": "Lower-case letters, digits, hyphens (e.g. web, mail, dns)."}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["nodes"] = list(self.instance.nodes.values_list("pk", flat=True))


class PackageForm(DataForm):
    class Meta:
        model = Package
        fields = ("name", "roles")


class FileForm(DataForm, ManagedFileForm):
    """The file editor: content, mode in octal, owner, group, special bits, ``secret``.

    Marking a file secret or not is for users who may view secret files (``sync.rights``);
    others see the mark, disabled, and their form keeps it as it is.
    """

    class Meta(ManagedFileForm.Meta):
        model = ManagedFile

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["content"].widget.attrs.update({"class": "form-control font-monospace"})
        if not may_view_secrets(self.user, ManagedFile):
            self.fields["secret"].disabled = True
            self.fields["secret"].help_text += " (Only they may change this mark.)"


class UserForm(DataForm):
    class Meta:
        model = ManagedUser
        fields = ("name", "shell", "authorized_keys", "state", "adopt_existing", "roles")
        widgets = {
            "authorized_keys": forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["authorized_keys"].widget.attrs["class"] = "form-control font-monospace"


class ServiceForm(DataForm):
    class Meta:
        model = Service
        fields = ("name", "roles", "files")
