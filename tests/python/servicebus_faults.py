"""Fault behaviour of trimtab's Service Bus stand-in as the Python client (azure-servicebus 7.15.0) sees it.

Usage: servicebus_faults.py CONNECTION_STRING QUEUE

A step protocol over stdin/stdout lets the driving test flip the stand-in's fault switches at the right moment:
the script prints `READY <step>` and waits for a line on stdin before settling. Prints one JSON summary line.
"""

import json
import sys
import time

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusError


def body(message):
    return b"".join(message.body).decode()


def receive(receiver, count, deadline_s=20):
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count and time.monotonic() < deadline:
        got += receiver.receive_messages(max_message_count=count - len(got), max_wait_time=2)
    assert len(got) == count, f"expected {count} messages, got {len(got)}"
    return got


def wait_for(step):
    print(f"READY {step}", flush=True)
    assert sys.stdin.readline().strip() == "go", f"driver did not release step {step}"


def main():
    conn, queue = sys.argv[1], sys.argv[2]
    summary = {}
    with ServiceBusClient.from_connection_string(conn, retry_total=0) as client:
        with client.get_queue_sender(queue) as sender:
            sender.send_messages([ServiceBusMessage("lost"), ServiceBusMessage("slow")])
        with client.get_queue_receiver(queue) as receiver:
            by_body = {body(m): m for m in receive(receiver, 2)}

            wait_for("lost")
            try:
                receiver.complete_message(by_body["lost"])
                summary["lost_error"] = None
            except ServiceBusError as e:
                summary["lost_error"] = f"{type(e).__name__}: {e}"

            wait_for("slow")
            started = time.monotonic()
            receiver.complete_message(by_body["slow"])
            summary["slow_complete_seconds"] = time.monotonic() - started

            again = receive(receiver, 1)[0]
            summary["lost_redelivered"] = {"body": body(again), "delivery_count": again.delivery_count}
            receiver.complete_message(again)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
