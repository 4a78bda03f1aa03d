"""Confluent's own Python client against rivulet: StoreSale records written with
AvroSerializer + SchemaRegistryClient pointed at `rivulet registry`, and rivulet's window
results read back with AvroDeserializer.

    store_sales.py produce BOOTSTRAP REGISTRY TOPIC COUNT START_MS
        produces COUNT sales (3 stores, one per second of event time from START_MS),
        prints the expected sums: one JSON line per (window_start_ms, store_id)
    store_sales.py consume BOOTSTRAP REGISTRY TOPIC COUNT
        reads COUNT records from the beginning, prints each as one JSON line with its key
        (timestamps as epoch milliseconds, decimals as text)
"""

import datetime
import decimal
import json
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

STORE_SALE = json.dumps({
    "type": "record",
    "name": "StoreSale",
    "fields": [
        {"name": "store_id", "type": "string"},
        {"name": "sale_amount", "type": "int"},
        {"name": "sale_ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
})


def produce(bootstrap, registry, topic, count, start_ms):
    client = SchemaRegistryClient({"url": registry})
    values = AvroSerializer(client, STORE_SALE)
    keys = StringSerializer("utf_8")
    producer = Producer({"bootstrap.servers": bootstrap})
    expected = {}
    for i in range(count):
        store = "store-%d" % (i % 3 + 1)
        amount = (i * 53) % 400 + 1
        ts = start_ms + i * 1000
        sale = {"store_id": store, "sale_amount": amount, "sale_ts": ts}
        producer.produce(
            topic,
            key=keys(store),
            value=values(sale, SerializationContext(topic, MessageField.VALUE)),
        )
        window = ts - ts % 60000
        expected[(window, store)] = expected.get((window, store), 0) + amount
    if producer.flush(30) != 0:
        raise SystemExit("not every sale was delivered")
    for (window, store), total in sorted(expected.items()):
        print(json.dumps({"window_start_ms": window, "store_id": store, "total": total}))


def plain(value):
    """JSON for what AvroDeserializer returns beyond JSON's types: timestamp-millis as
    epoch milliseconds, decimals as their text."""
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError("cannot print %r" % (value,))


def consume(bootstrap, registry, topic, count):
    client = SchemaRegistryClient({"url": registry})
    values = AvroDeserializer(client)
    keys = AvroDeserializer(client)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "interop-reader",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    read = 0
    deadline = time.time() + 60
    while read < count and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise SystemExit("consume: %s" % message.error())
        value = values(message.value(), SerializationContext(topic, MessageField.VALUE))
        key = keys(message.key(), SerializationContext(topic, MessageField.KEY))
        print(json.dumps({"key": key, "value": value}, default=plain), flush=True)
        read += 1
    consumer.close()
    if read < count:
        raise SystemExit("read %d of %d records" % (read, count))


if __name__ == "__main__":
    command, bootstrap, registry, topic, count = sys.argv[1:6]
    if command == "produce":
        produce(bootstrap, registry, topic, int(count), int(sys.argv[6]))
    else:
        consume(bootstrap, registry, topic, int(count))
