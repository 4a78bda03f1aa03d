# rivulet with the workshop's components and pipeline specs.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release -p rivulet \
 && cargo build --profile wasm --target wasm32-wasip2 \
      -p udf-parse-orders -p udf-parse-sales -p udf-high-value -p udf-order-summary \
      -p udf-count-by-status -p udf-format-aggregate -p udf-avg-amount -p udf-sum-sales

FROM debian:bookworm-slim
WORKDIR /app
COPY --from=build /src/target/release/rivulet /usr/local/bin/rivulet
COPY --from=build /src/target/wasm32-wasip2/wasm/*.wasm target/wasm32-wasip2/wasm/
COPY pipelines pipelines
ENTRYPOINT ["rivulet"]
