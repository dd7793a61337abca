"""Conformance check of trimtab's Service Bus stand-in with the official Python client (azure-servicebus 7.15.0).

Usage: servicebus_conformance.py CONNECTION_STRING QUEUE

Sends a single message and a batch, receives them in peek-lock mode, renews a lock, completes, abandons and
dead-letters, reads the dead letter back from the DLQ sub-queue, and prints one JSON summary line. Every step
asserts what it reads, so a non-zero exit means the stand-in disagreed with the client.
"""

import json
import sys
import time
import uuid

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue


def body(message):
    return b"".join(message.body).decode()


def receive(receiver, count, deadline_s=20):
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count and time.monotonic() < deadline:
        got += receiver.receive_messages(max_message_count=count - len(got), max_wait_time=2)
    assert len(got) == count, f"expected {count} messages, got {len(got)}"
    return got


def main():
    conn, queue = sys.argv[1], sys.argv[2]
    summary = {}
    with ServiceBusClient.from_connection_string(conn, retry_total=0) as client:
        with client.get_queue_sender(queue) as sender:
            sender.send_messages(ServiceBusMessage("single", message_id="m-single"))
            batch = sender.create_message_batch()
            summary["batch_max_size"] = batch.max_size_in_bytes
            for i in range(3):
                batch.add_message(ServiceBusMessage(f"batch-{i}"))
            sender.send_messages(batch)

        with client.get_queue_receiver(queue) as receiver:
            first = receive(receiver, 4)
            summary["bodies"] = [body(m) for m in first]
            summary["sequence_numbers"] = [m.sequence_number for m in first]
            summary["first_delivery_counts"] = [m.delivery_count for m in first]
            tokens = [str(uuid.UUID(str(m.lock_token))) for m in first]
            assert len(set(tokens)) == 4, f"lock tokens must be distinct: {tokens}"
            summary["lock_tokens_parse"] = True
            assert all(m.enqueued_time_utc is not None for m in first), "enqueued time missing"

            by_body = {body(m): m for m in first}
            single = by_body["single"]
            before = single.locked_until_utc
            time.sleep(1.1)
            renewed = receiver.renew_message_lock(single)
            summary["renew_moved_lock"] = renewed > before
            assert renewed > before, f"renew did not move the lock: {before} -> {renewed}"

            receiver.complete_message(single)
            receiver.complete_message(by_body["batch-2"])
            receiver.abandon_message(by_body["batch-0"])
            receiver.dead_letter_message(
                by_body["batch-1"], reason="BadSchema", error_description="field volume missing"
            )

            again = receive(receiver, 1)[0]
            summary["redelivered_body"] = body(again)
            summary["redelivered_delivery_count"] = again.delivery_count
            assert body(again) == "batch-0", body(again)
            assert again.delivery_count == 1, f"abandon must raise the delivery count, got {again.delivery_count}"
            receiver.complete_message(again)

        with client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            dead = receive(dlq, 1)[0]
            summary["dead_letter"] = {
                "body": body(dead),
                "reason": dead.dead_letter_reason,
                "description": dead.dead_letter_error_description,
            }
            assert dead.dead_letter_reason == "BadSchema", dead.dead_letter_reason
            dlq.complete_message(dead)

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
