"""Node information: the facts the other types and the admins rely on (OS, kernel, size)."""

from __future__ import annotations

from nodes.choices import NodeStatus
from nodes.clock import read_db_now
from nodes.facts import fact_columns, os_label
from nodes.models import Node
from nodes.transports.limits import FACT_CHARS, clean
from sync.context import RunContext
from sync.synchronizers import synchronizer

# One fixed script, one round trip: real nodes are remote and every command costs latency.
# It contains no data from the panel, so it is safe to hand to sh.
FACTS_SCRIPT = r"""
echo "hostname=$(uname -n)"
echo "kernel=$(uname -r)"
echo "arch=$(uname -m)"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
awk '/^MemTotal:/{print "memory_kb="$2}
     /^MemAvailable:/{print "memory_available_kb="$2}' /proc/meminfo
df -Pk / | awk 'NR==2{print "disk_total_kb="$2; print "disk_used_kb="$3;
                      print "disk_available_kb="$4}'
awk '{print "uptime_seconds="int($1)}' /proc/uptime
if [ -r /etc/os-release ]; then
  ( . /etc/os-release; echo "os_id=$ID"; echo "os_name=$NAME"; echo "os_version=$VERSION_ID"; \
    echo "os_pretty=$PRETTY_NAME"; echo "os_id_like=$ID_LIKE" )
fi
"""

_INTS = {
    "cpus",
    "memory_kb",
    "memory_available_kb",
    "disk_total_kb",
    "disk_used_kb",
    "disk_available_kb",
    "uptime_seconds",
}


def parse_facts(output: str) -> dict:
    """Turn the script's ``key=value`` lines into the facts stored on the node, each text
    cleaned and capped (``nodes.text``): the node may say anything."""
    raw: dict[str, str | int] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if key in _INTS:
            try:
                raw[key] = int(value)
            except ValueError:
                continue
        else:
            raw[key] = clean(value, FACT_CHARS, one_line=True)
    return {
        "hostname": raw.get("hostname", ""),
        "os": {
            "id": raw.get("os_id", ""),
            "name": raw.get("os_name", ""),
            "version": raw.get("os_version", ""),
            "pretty": raw.get("os_pretty", ""),
            "id_like": raw.get("os_id_like", ""),
        },
        "kernel": raw.get("kernel", ""),
        "arch": raw.get("arch", ""),
        "cpus": raw.get("cpus"),
        "memory_mb": _mb(raw.get("memory_kb")),
        "memory_available_mb": _mb(raw.get("memory_available_kb")),
        "disk_total_mb": _mb(raw.get("disk_total_kb")),
        "disk_used_mb": _mb(raw.get("disk_used_kb")),
        "disk_available_mb": _mb(raw.get("disk_available_kb")),
        "uptime_seconds": raw.get("uptime_seconds"),
    }


def _mb(kb: int | str | None) -> int | None:
    return kb // 1024 if isinstance(kb, int) else None


def store_facts(node_id: int, facts: dict) -> None:
    """Keep the facts on the node: the JSON and the columns the list sorts by, in one UPDATE,
    stamped with the database's clock (the refresh schedule compares on that clock)."""
    collected = read_db_now()
    facts = {**facts, "collected_at": collected.isoformat()}
    Node.objects.filter(pk=node_id).update(facts=facts, **fact_columns(facts, collected))


async def collect_facts(ctx: RunContext) -> dict:
    """Run the facts script on the node (one round trip), store and log what it said."""
    result = await ctx.transport.run(["sh", "-c", FACTS_SCRIPT])
    facts = parse_facts(result.stdout)
    if not facts["hostname"] or not facts["kernel"]:
        raise ValueError("the node did not report its hostname and kernel")
    await ctx.db(store_facts, ctx.node.pk, facts)
    ctx.log(
        f"{facts['hostname']}: {os_label(facts) or 'unknown OS'}, "
        f"kernel {facts['kernel']}, {facts['cpus']} CPUs, {facts['memory_mb']} MB memory"
    )
    return facts


@synchronizer(
    name="nodeinfo",
    title="Node information",
    priority=10,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=60,
    needs=(),
)
async def collect_node_information(ctx: RunContext) -> None:
    """The facts a new node's other types need first (software chooses apt or dnf by them):
    the node is Synchronizing until they are in. Their refresh later is ``facts``, which
    leaves the node Ready."""
    await collect_facts(ctx)
