-- The workshop's closing exploration in SQL: each order joined with the region table as it
-- stands when the order arrives (Flink's lookup join, FOR SYSTEM_TIME AS OF), then a count
-- per region name in 30 s processing-time windows. `rivulet sql -f pipelines/orders-per-region.sql`
-- runs it as written; pipelines/orders-per-region.toml is the same job as a spec.
-- The region table is broadcast: every task holds all of it. With 'connector' = 'upsert-kafka'
-- (a compacted topic, 'key.format' = 'raw', 'value.format' = 'json') it is kept up to date
-- while the job runs. A plain JOIN (without FOR SYSTEM_TIME) reads a filesystem table the
-- same way; LEFT JOIN keeps the orders of an unknown region, with a null name.
CREATE TEMPORARY TABLE orders (
  customer STRING, status STRING, region STRING, amount DOUBLE, ts STRING, tsMillis BIGINT,
  proc_time AS PROCTIME()
) WITH (
  'connector' = 'kafka', 'topic' = 'partitioned-topic', 'properties.bootstrap.servers' = 'localhost:9094',
  'properties.group.id' = 'flink-sql-orders-per-region', 'scan.startup.mode' = 'earliest-offset',
  'format' = 'json', 'json.ignore-parse-errors' = 'true'
);
CREATE TEMPORARY TABLE regions (
  region STRING, name STRING, country STRING,
  PRIMARY KEY (region) NOT ENFORCED
) WITH (
  'connector' = 'filesystem', 'path' = '../samples/regions.jsonl', 'format' = 'json'
);
CREATE TEMPORARY TABLE orders_per_region (
  window_start TIMESTAMP(3), window_end TIMESTAMP(3), name STRING, order_count BIGINT
) WITH (
  'connector' = 'print'
);
INSERT INTO orders_per_region
SELECT window_start, window_end, r.name, COUNT(*) AS order_count
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(proc_time), INTERVAL '30' SECOND)) AS o
JOIN regions FOR SYSTEM_TIME AS OF o.proc_time AS r ON o.region = r.region
GROUP BY window_start, window_end, r.name;
