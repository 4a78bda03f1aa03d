-- The sales workshop as a Flink SQL job: StoreSale records (Avro, written by Confluent's
-- serializer or `rivulet seed sales --format avro`; key = the store id) → the total per
-- store in 60 s event-time windows → an upsert-kafka table keyed by store (Avro key and
-- value, schemas in the registry). `rivulet sql -f pipelines/sales-per-store.sql` runs it
-- as written; so would Flink's SQL client. `just demo-sql` runs it end to end.
--   rivulet broker --registry &
--   rivulet seed sales --format avro --registry http://127.0.0.1:8081 &
--   rivulet sql -f pipelines/sales-per-store.sql
SET 'pipeline.name' = 'sales-per-store-sql';
SET 'execution.checkpointing.mode' = 'EXACTLY_ONCE';

CREATE TABLE sales (
  store_id STRING,
  sale_amount INT,
  sale_ts TIMESTAMP(3),
  WATERMARK FOR sale_ts AS sale_ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'sales',
  'properties.bootstrap.servers' = '127.0.0.1:9094',
  'properties.group.id' = 'sales-per-store-sql',
  'scan.startup.mode' = 'earliest-offset',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://127.0.0.1:8081'
);

CREATE TABLE sales_per_store (
  store_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  total_sales INT,
  PRIMARY KEY (store_id) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'sales-per-store-sql',
  'properties.bootstrap.servers' = '127.0.0.1:9094',
  'key.format' = 'avro-confluent',
  'key.avro-confluent.url' = 'http://127.0.0.1:8081',
  'value.format' = 'avro-confluent',
  'value.avro-confluent.url' = 'http://127.0.0.1:8081'
);

INSERT INTO sales_per_store
SELECT store_id, window_start, window_end, SUM(sale_amount) AS total_sales
FROM TABLE(TUMBLE(TABLE sales, DESCRIPTOR(sale_ts), INTERVAL '60' SECOND))
GROUP BY window_start, window_end, store_id;
