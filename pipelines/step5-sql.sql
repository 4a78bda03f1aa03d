-- Workshop step 5 (bonus): the count per status in 15 s processing-time windows, as the
-- Flink SQL client runs it. `rivulet sql -f pipelines/step5-sql.sql` runs it as written.
CREATE TEMPORARY TABLE orders (
  customer STRING, status STRING, region STRING, amount DOUBLE, ts STRING, tsMillis BIGINT,
  proc_time AS PROCTIME()
) WITH (
  'connector' = 'kafka', 'topic' = 'partitioned-topic', 'properties.bootstrap.servers' = 'localhost:9094',
  'properties.group.id' = 'flink-sql-orders', 'scan.startup.mode' = 'earliest-offset',
  'format' = 'json', 'json.ignore-parse-errors' = 'true'
);
CREATE TEMPORARY TABLE flink_aggregates_sql (
  window_start TIMESTAMP(3), window_end TIMESTAMP(3), status STRING, order_count BIGINT
) WITH (
  'connector' = 'kafka', 'topic' = 'flink-aggregates-sql', 'properties.bootstrap.servers' = 'localhost:9094',
  'format' = 'json', 'json.timestamp-format.standard' = 'ISO-8601'
);
INSERT INTO flink_aggregates_sql
SELECT window_start, window_end, status, COUNT(*) AS order_count
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(proc_time), INTERVAL '15' SECOND))
GROUP BY window_start, window_end, status;
