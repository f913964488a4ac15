"""How the software type asks dnf (and parses apt) whether a name is a package's own.

No dnf on the Debian test machine: the queries' argument lists and the parsing of their
answers are checked here against answers written as dnf gives them; apt is checked for real
in ``tests/integration/test_package_names.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nodes.transports import CommandResult, Transport
from sync.context import RunContext
from sync.synchronizers.software import DNF_NAMES, refusals, reverse_provides


class AnsweringTransport(Transport):
    """Answers each command from ``answers`` (argv tuple -> stdout); records what it ran."""

    def __init__(self, answers: dict[tuple[str, ...], str]) -> None:
        self.answers = answers
        self.ran: list[list[str]] = []

    async def run(self, argv: Sequence[str], **kwargs) -> CommandResult:
        self.ran.append(list(argv))
        return CommandResult(list(argv), 0, self.answers.get(tuple(argv), ""), "")

    async def _file_ops(self):
        raise AssertionError("no file work here")


def dnf_refusals(names: list[str], answers: dict[tuple[str, ...], str]):
    transport = AnsweringTransport(answers)
    ctx = RunContext(node=None, transport=transport)  # type: ignore[arg-type]
    return asyncio.run(refusals(ctx, "dnf", names)), transport.ran


def test_it_asks_dnf_for_the_name_as_it_is_and_compares_the_answer_whole():
    answers = {
        (*DNF_NAMES, "--", "gcc-c++"): "gcc-c++\n",
        (*DNF_NAMES, "--", "python3.11"): "\npython3.11\n\n",  # dnf 4 adds blank lines
        # dnf reads these as name.arch and name-version: they answer for another package
        (*DNF_NAMES, "--", "zlib.x86_64"): "zlib\n",
        (*DNF_NAMES, "--", "bash-5.2.26"): "bash\n",
    }
    refused, ran = dnf_refusals(["gcc-c++", "python3.11", "zlib.x86_64", "bash-5.2.26"], answers)

    assert refused == [
        "zlib.x86_64: dnf knows no package of exactly this name",
        "bash-5.2.26: dnf knows no package of exactly this name",
    ]
    assert ran[0] == ["dnf", "repoquery", "--quiet", "--queryformat", "%{name}\\n", "--", "gcc-c++"]
    assert all(argv[0] == "dnf" and "install" not in argv for argv in ran)


def test_it_names_the_providers_of_a_name_dnf_only_knows_as_a_capability():
    answers = {(*DNF_NAMES, "--whatprovides", "webserver"): "httpd\nnginx\nhttpd\n"}
    refused, _ = dnf_refusals(["webserver"], answers)
    assert refused == ["webserver: a virtual package, provided by httpd, nginx: name one of them"]


def test_it_reads_the_providers_from_apt_cache_showpkg():
    showpkg = (
        "Package: awk\nVersions: \n\nReverse Depends: \n  base-files,awk\n"
        "Dependencies: \nProvides: \nReverse Provides: \n"
        "original-awk 2022-09-12-1 (= )\nmawk 1.3.4.20200120-3.1 (= )\ngawk 1:5.2.1-2 (= )\n"
    )
    assert reverse_provides(showpkg) == ["gawk", "mawk", "original-awk"]
    assert reverse_provides("Package: x\nVersions: \n") == []
