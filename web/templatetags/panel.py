"""Template helpers of the panel's pages."""

from __future__ import annotations

from datetime import datetime

from django import forms, template
from django.core.paginator import Page
from django.template.defaultfilters import filesizeformat
from django.utils.timesince import timesince

from sync.engine import work_line as _work_line
from web.polling import query_without_poll
from web.rows import render_rows

register = template.Library()


@register.simple_tag(takes_context=True)
def page_url(context: template.Context, param: str, number: int) -> str:
    """The current URL's query with ``param`` set to ``number`` (other filters kept).

    Django's ``{% querystring %}`` cannot take the parameter's name from a variable, and the
    node page has two paginated parts.
    """
    query = query_without_poll(context["request"])
    query[param] = str(number)
    return f"?{query.urlencode()}"


@register.simple_tag
def elided_range(page: Page) -> list:
    """Page numbers around the current one, with ellipses (``Paginator.ELLIPSIS``)."""
    return list(page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1))


@register.filter
def seconds(value: float | None) -> str:
    """A run's duration for people: 0.4 s, 12 s, 3 min 5 s."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest} s"


@register.filter
def bootstrap(field):
    """Render a form field's widget with Bootstrap's class (forms the panel does not own,
    like the login form, have none) and ``is-invalid`` when it has errors."""
    widget = field.field.widget
    css = widget.attrs.get("class", "")
    if not css:
        if getattr(widget, "input_type", "") == "checkbox":
            css = "form-check-input"
        elif isinstance(widget, forms.Select):
            css = "form-select"
        else:
            css = "form-control"
    if field.errors and "is-invalid" not in css:
        css += " is-invalid"
    return field.as_widget(attrs={"class": css})


@register.filter
def cut_at_word(value: object, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters at a word boundary, with "…" when cut.

    Django's ``truncatechars`` cuts mid-word ("acceptk…"); a page that cuts a text must also
    put the whole of it one click away (a ``<details>``, or a link to the node's page). A name
    without spaces (a role's slug) is cut where its words join, at a hyphen or underscore.
    """
    text = str(value or "")
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 1)]
    # A word that ends just where the "…" goes is kept whole.
    room = text[:limit]
    space = room.rfind(" ")
    if space <= limit // 2:
        space = max(room.rfind("-"), room.rfind("_"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-_") + "…"


@register.filter
def is_cut(value: object, limit: int) -> bool:
    """Whether ``cut_at_word`` would cut ``value`` at ``limit`` (the page then offers all)."""
    return len(str(value or "")) > limit


@register.filter
def work_line(node) -> str:
    """The synchronizer's part of a node's Status cell (``sync.engine.work_line``)."""
    return _work_line(node)


@register.filter
def mebibytes(value: int | None) -> str:
    """A size the facts give in MiB, in human units ("7.6 GB", 1024-based like ``df -h``)."""
    if value is None:
        return ""
    return filesizeformat(int(value) * 1024 * 1024)


@register.filter
def age(value: datetime | None) -> str:
    """How long ago, in its largest unit only ("3 days"): enough to compare nodes by."""
    if value is None:
        return ""
    return timesince(value, depth=1)


@register.simple_tag
def node_rows(nodes: list, can_bulk: bool) -> str:
    """The nodes table's rows (``nodes/_row.html`` each), unchanged ones from the cache."""
    return render_rows(nodes, can_bulk)
