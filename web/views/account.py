"""The user's own account: API tokens (``/account/tokens/``).

A token is made here for the user who is logged in, shown once on the answer page (only its
digest is kept), listed with its scope and last use, and revoked here. Making and revoking
are actions (``sync.actions``) with their audit entries.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from sync import actions
from sync.models import ApiToken
from web.views.shortcuts import acting_user


class TokenForm(forms.Form):
    name = forms.CharField(max_length=50, help_text="What the token is for, e.g. provisioning.")
    read_only = forms.BooleanField(required=False, label="Read-only (may only look)")


class RevokeForm(forms.Form):
    revoke = forms.IntegerField(min_value=1, max_value=2**63 - 1)


@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """List, make and revoke the user's API tokens; a new token is shown once."""
    made = ""
    form = TokenForm()
    if request.method == "POST":
        if "revoke" in request.POST:
            revoke = RevokeForm(request.POST)
            token = None
            if revoke.is_valid():
                token = ApiToken.objects.filter(
                    pk=revoke.cleaned_data["revoke"], user=request.user
                ).first()
            if token is None:
                messages.error(request, "No such token of yours.")
            else:
                actions.revoke_token(acting_user(request), token)
                messages.success(request, f"Revoked the token {token.name}.")
            return redirect("account_tokens")
        form = TokenForm(request.POST)
        if form.is_valid():
            try:
                done = actions.create_token(
                    acting_user(request),
                    request.user,
                    form.cleaned_data["name"],
                    read_only=form.cleaned_data["read_only"],
                )
            except ValidationError as e:
                for field, errors in e.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                made = done.extra["token"]
                form = TokenForm()
    rows = ApiToken.objects.filter(user=request.user)
    response = render(request, "account/tokens.html", {"form": form, "tokens": rows, "made": made})
    if made:
        response["Cache-Control"] = "no-store"  # the token must not stay in a cache
    return response
