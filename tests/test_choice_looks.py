"""Every choice set the pages draw carries its label, icon and CSS class itself, and every
icon exists: a new value without its look fails here, not on a page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nodes.choices import NodeCondition, NodeStatus
from sync.models import DesyncState, Outcome

ICONS = Path(__file__).resolve().parent.parent / "static" / "icons.svg"


@pytest.mark.parametrize("choices", [NodeStatus, NodeCondition, DesyncState, Outcome])
def test_every_value_has_a_label_an_icon_and_a_css_class(choices):
    symbols = set(re.findall(r'<symbol[^>]*\bid="([^"]+)"', ICONS.read_text()))
    for member in choices:
        assert member.label and member.css, member
        assert member.icon in symbols, (member, member.icon)
    # The looks are attributes, not extra members stored in the database.
    assert [m.value for m in choices] == [value for value, _ in choices.choices]


def test_the_template_tags_hold_no_icons_of_their_own():
    tags = Path(__file__).resolve().parent.parent / "web" / "templatetags" / "panel.py"
    text = tags.read_text()
    for icon in ("check-circle", "x-circle", "spinner", "hourglass"):
        assert icon not in text
