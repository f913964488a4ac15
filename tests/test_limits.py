"""The caps on what is read from a node: the head-and-tail helper and the reply checks."""

import pytest

from nodes.transports import CommandFailed
from nodes.transports.limits import Capture, clean, keep_head_and_tail
from nodes.transports.replies import (
    NotARunnerReply,
    check_frame_size,
    parse_reply,
    reply_error,
)

DATA = bytes(range(256)) * 4000  # 1 MB


def test_it_leaves_what_fits_alone():
    assert keep_head_and_tail(b"abc", 3) == b"abc"
    assert keep_head_and_tail("abc", 10) == "abc"


def test_it_keeps_head_and_tail_within_the_limit_and_counts_the_cut():
    kept = keep_head_and_tail(DATA, 1000)
    assert len(kept) <= 1000
    head, marker, tail = kept.partition(b"\n[... ")
    assert DATA.startswith(head) and len(head) > 450
    cut = int(tail.split(b" ", 1)[0])
    rest = tail.partition(b" bytes cut ...]\n")[2]
    assert DATA.endswith(rest) and len(rest) > 450
    assert len(head) + cut + len(rest) == len(DATA)
    assert keep_head_and_tail(kept, 1000) == kept  # never cut twice


def test_it_says_characters_for_text():
    assert "[... 70 characters cut ...]" in keep_head_and_tail("x" * 50 + "y" * 50, 60)


@pytest.mark.parametrize("chunk", [1, 1000, 65536, 300_000])
def test_it_captures_a_stream_as_if_it_had_kept_it_all(chunk):
    for limit in (100, 4096, 200_000, 2_000_000):
        capture = Capture(limit)
        for i in range(0, len(DATA), chunk):
            capture.feed(DATA[i : i + chunk])
        assert capture.value() == keep_head_and_tail(DATA, limit)
        assert capture.over == (len(DATA) > limit)


def test_it_refuses_an_oversize_frame_from_its_length():
    check_frame_size(16 * 1024 * 1024)
    with pytest.raises(NotARunnerReply, match="a frame of 4294967280 bytes, over the 16 MiB"):
        check_frame_size(0xFFFFFFF0)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"\xff\xfe garbage", "not JSON"),
        (b"[" * 900 + b"]" * 900, "not a JSON object"),
        (b"[" * 5000, "too many JSON values"),
        (b"[" + b"0," * 2000 + b"0]", "too many JSON values"),
        (b'"a string"', "not a JSON object"),
    ],
)
def test_it_refuses_what_is_not_a_reply(data, expected):
    with pytest.raises(NotARunnerReply, match=expected):
        parse_reply(data)


def test_it_parses_a_reply():
    assert parse_reply(b'{"rc": 0, "out": "aGk=", "err": ""}') == {
        "rc": 0,
        "out": "aGk=",
        "err": "",
    }


HOSTILE = "\x1b[2J\x07ok\u202egnp.exe\u2066\x00"


def test_it_cleans_what_a_node_says_and_caps_it():
    assert clean(HOSTILE, 100) == "?[2J?ok?gnp.exe??"
    assert clean("a\tb\nc", 100) == "a\tb\nc"
    assert clean("a\tb\r\nc\nd", 100, one_line=True) == "a b c d"
    capped = clean("x" * 400_000, 255, one_line=True)
    assert len(capped) == 255 and "characters cut" in capped and "\n" not in capped


def test_it_cleans_the_errors_a_node_sends():
    assert reply_error({"error": HOSTILE * 100}) == clean(HOSTILE * 100, 500)
    message = str(CommandFailed(["false"], 1, HOSTILE))
    assert message == "command `false` exited with 1: ?[2J?ok?gnp.exe??"
