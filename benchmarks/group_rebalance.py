"""Does a consumer group with several members work on the broker? Three members split a 12-partition topic,
one is killed with -9 (no LeaveGroup: its session has to expire), the other two take its partitions over, and
a fourth joins.

    python benchmarks/group_rebalance.py [--broker HOST:PORT]

Without --broker it starts the embedded Tansu broker (memory storage) on a free port. Each member is a
process with the worker's group timeouts on the embedded broker (streams/app.py: session 10 s, heartbeat 1 s,
rebalance 10 s); members commit after each fetch. Prints the seconds each step took, the partitions each
member holds, and whether every message was read at least once (a killed member's uncommitted fetch is read
again by its successor: at least once, the guard's dedupe makes it once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
import uuid

MEMBER = r"""
import asyncio, json, sys
from aiokafka import AIOKafkaConsumer

async def main(broker, topic, group, name):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=10000,
                                heartbeat_interval_ms=1000, rebalance_timeout_ms=10000, fetch_max_wait_ms=100)
    await consumer.start()
    while True:
        batch = await consumer.getmany(timeout_ms=200)
        for tp, messages in batch.items():
            for message in messages:
                print(json.dumps(["read", name, message.partition, message.offset]), flush=True)
        if batch:
            await consumer.commit()
        print(json.dumps(["holds", name, sorted(tp.partition for tp in consumer.assignment())]), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""
PARTITIONS = 12


class Group:
    def __init__(self, broker: str, topic: str):
        self.broker, self.topic, self.group = broker, topic, f"rebalance-{uuid.uuid4().hex[:6]}"
        self.holds: dict[str, list[int]] = {}
        self.read: list[tuple[str, int, int]] = []
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.tasks: list[asyncio.Task] = []

    def join(self, name: str) -> None:
        self.tasks.append(asyncio.create_task(self._run(name)))

    async def _run(self, name: str) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MEMBER, self.broker, self.topic, self.group, name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        self.processes[name] = process
        assert process.stdout is not None
        async for line in process.stdout:
            kind, member, *rest = json.loads(line)
            if kind == "read":
                self.read.append((member, rest[0], rest[1]))
            elif name in self.processes and self.processes[name].returncode is None:
                self.holds[member] = rest[0]

    def kill9(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.holds.pop(name, None)

    def split(self, members: int) -> bool:
        """`members` members hold every partition between them, each some."""
        held = [p for partitions in self.holds.values() for p in partitions]
        return (len(self.holds) == members and all(self.holds.values())
                and sorted(held) == list(range(PARTITIONS)))

    async def until(self, condition, timeout: float = 120.0) -> float:
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not reached in {timeout} s: {self.holds}")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def close(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
            await process.wait()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def run(broker: str) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"rebalance-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()

    async def produce(n: int) -> None:
        for i in range(n):
            await producer.send(topic, value=b"x", partition=i % PARTITIONS)
        await producer.flush()

    group = Group(broker, topic)
    try:
        for name in ("a", "b", "c"):
            group.join(name)
        seconds = await group.until(lambda: group.split(3))
        print(f"3 members split {PARTITIONS} partitions in {seconds:.1f} s: {group.holds}")
        await produce(1200)
        await group.until(lambda: len({(p, o) for _, p, o in group.read}) >= 1200)
        group.kill9("a")
        await produce(1200)
        seconds = await group.until(lambda: group.split(2) and len({(p, o) for _, p, o in group.read}) >= 2400)
        distinct = len({(p, o) for _, p, o in group.read})
        print(f"member a killed -9: the other two hold every partition and read every message after {seconds:.1f} s"
              f" ({distinct} of 2400 distinct, {len(group.read) - distinct} read twice): {group.holds}")
        group.join("d")
        seconds = await group.until(lambda: group.split(3))
        print(f"member d joined: 3 members again after {seconds:.1f} s: {group.holds}")
    finally:
        await group.close()
        await producer.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=None, help="host:port (default: an embedded Tansu broker)")
    args = parser.parse_args()
    if args.broker:
        asyncio.run(run(args.broker))
        return
    from streams.broker import EmbeddedBroker

    with EmbeddedBroker(f"127.0.0.1:{free_port()}") as broker:
        asyncio.run(run(broker.listen))


if __name__ == "__main__":
    main()
