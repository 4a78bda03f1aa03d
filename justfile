# rivulet's recipes. CI runs `just test` (via .ci/run), so local = CI.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Every crate under udfs/ (a new step's crate is picked up without editing this file).
udf_crates := `sed -n 's/^name = "\(.*\)"/\1/p' udfs/*/Cargo.toml | tr '\n' ' '`

# List the recipes.
default:
    @just --list

# Install what the build needs (idempotent): the wasm32-wasip2 target.
setup:
    @rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Build every UDF under udfs/ as a wasm32-wasip2 component.
udfs: setup
    cargo build --profile wasm --target wasm32-wasip2 {{ prepend("-p ", udf_crates) }}
    @for crate in {{ udf_crates }}; do f=target/wasm32-wasip2/wasm/${crate//-/_}.wasm; printf "  %-48s %8d bytes\n" "$f" "$(stat -c %s "$f")"; done

# The tests' own components: hot-swap variants, hostile guests, contract breakers.
test-guests: setup swap-guests hostile-guests breach-guests
    cargo build -q --profile wasm --target wasm32-wasip2 -p lookup-probe --features parse
    cp target/wasm32-wasip2/wasm/lookup_probe.wasm target/wasm32-wasip2/wasm/lookup_probe_parse.wasm
    cargo build -q --profile wasm --target wasm32-wasip2 -p hostile-guest -p hostile-aggregate -p lookup-probe

swap_guests := "swap-parse:v1 swap-parse:v2 swap-parse:trap swap-parse:sleep swap-map:v1 swap-map:v2 swap-map:v3 swap-map:v4 swap-aggregate:v1 swap-aggregate:v2 swap-aggregate:v3 swap-aggregate:v4 shadow-parse:v1 shadow-parse:lower shadow-parse:trap shadow-aggregate:v1 shadow-aggregate:double shadow-format:v1 shadow-format:keyed"

# The hot-swap tests' components: one build per variant, copied to <crate>_<variant>.wasm.
swap-guests: setup
    #!/usr/bin/env bash
    set -euo pipefail
    for spec in {{ swap_guests }}; do
        crate=${spec%%:*}; variant=${spec##*:}; file=${crate//-/_}
        RIVULET_SWAP_VARIANT=$variant cargo build -q --profile wasm --target wasm32-wasip2 -p "$crate"
        cp "target/wasm32-wasip2/wasm/$file.wasm" "target/wasm32-wasip2/wasm/${file}_$variant.wasm"
    done

# The sandbox tests' hostile guest in its other worlds, copied to hostile_guest_<world>.wasm
# (the parse build, hostile_guest.wasm, comes with `test-guests`).
hostile-guests: setup
    #!/usr/bin/env bash
    set -euo pipefail
    for world in map aggregate format; do
        cargo build -q --profile wasm --target wasm32-wasip2 -p hostile-guest --features "$world"
        cp target/wasm32-wasip2/wasm/hostile_guest.wasm "target/wasm32-wasip2/wasm/hostile_guest_$world.wasm"
    done

breach_guests := "parse map aggregate format"

# The contract tests' components (raw WIT, no SDK): one build per world, as breach_guest_<world>.wasm.
breach-guests: setup
    #!/usr/bin/env bash
    set -euo pipefail
    for world in {{ breach_guests }}; do
        cargo build -q --profile wasm --target wasm32-wasip2 -p breach-guest --features "$world"
        cp target/wasm32-wasip2/wasm/breach_guest.wasm "target/wasm32-wasip2/wasm/breach_guest_$world.wasm"
    done

# Build one UDF (e.g. `just udf parse-orders`).
udf name: setup
    cargo build --profile wasm --target wasm32-wasip2 -p udf-{{ name }}

# The host binary, optimised.
build:
    cargo build --release -p rivulet

# Everything CI checks: UDFs, then every test of the workspace.
test: udfs test-guests
    scripts/python-venv >/dev/null
    RIVULET_REQUIRE_PYTHON=1 cargo test --release --workspace

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --release -- -D warnings

# Benchmarks: parse UDF per-record cost (Wasm vs native), module cache hit vs miss.
bench: udfs test-guests
    cargo bench -p rivulet --bench parse_batch

# Run a UDF over a sample file, e.g. `just try parse-orders samples/orders.jsonl`.
try name input: (udf name)
    cargo run --release -q -p rivulet -- udf test target/wasm32-wasip2/wasm/udf_{{ replace(name, "-", "_") }}.wasm --input {{ input }}

# The workshop live: embedded broker, seeder, steps 3+4 as components, results as windows fire.
# Says what it builds first: a fresh clone an unoptimised host (minutes, with cargo's progress), the optimised one once `just build` made it.
demo *args:
    #!/usr/bin/env bash
    set -euo pipefail
    echo "==> [1/3] the step components (udfs/*, wasm32-wasip2)" >&2
    {{ just_executable() }} udfs
    # The optimised host once there is one (`just build`, `just test`). Without one, the
    # `demo` profile (unoptimised but for the component compiler) comes first: a fresh
    # clone's first result in under 5 minutes instead of 10, with swaps as quick.
    if [ -x target/release/rivulet ]; then
        echo "==> [2/3] the host, optimised (target/release/rivulet exists; brought up to date)" >&2
        cargo build --release -p rivulet
        rivulet=target/release/rivulet
    else
        echo "==> [2/3] the host, unoptimised but for the component compiler (the demo profile; a fresh clone compiles ~330 crates: 3-4 minutes on 2 cores; later builds take seconds). \`just build\` makes the optimised host, which the next demo uses" >&2
        cargo build --profile demo -p rivulet
        rivulet=target/demo/rivulet
    fi
    echo "==> [3/3] the demo" >&2
    exec "$rivulet" demo {{ args }}

# The sales workshop's SQL job (pipelines/sales-per-store.sql) end to end: embedded broker and
# schema registry, Avro sales seeded, the upsert-kafka results printed (`just demo-sql 60`).
demo-sql seconds="30": build
    scripts/demo-sql {{ seconds }}

# The workshop's steps 1-4 over a sample file, one component at a time, no Kafka.
walkthrough: udfs build
    #!/usr/bin/env bash
    set -euo pipefail
    rivulet=target/release/rivulet
    wasm=target/wasm32-wasip2/wasm
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "== step 1: parse orders, drop malformed ones"
    $rivulet udf test $wasm/udf_parse_orders.wasm --input samples/orders.jsonl | tee "$tmp/parsed.txt"
    sed -n 's/^[0-9]*: \({.*\)$/\1/p' "$tmp/parsed.txt" > "$tmp/orders.jsonl"
    echo "== step 2: order summaries"
    $rivulet udf test $wasm/udf_order_summary.wasm --input "$tmp/orders.jsonl"
    echo "== step 3: count per status in the window 12:35:00 to 12:35:30 (by tsMillis; orders outside it are not added)"
    $rivulet udf test $wasm/udf_count_by_status.wasm --input "$tmp/orders.jsonl" --key status \
        --timestamp tsMillis --window-start 2024-05-23T12:35:00Z --window-end 2024-05-23T12:35:30Z | tee "$tmp/counts.txt"
    sed -n 's/^result \[[^]]*\]: //p' "$tmp/counts.txt" > "$tmp/counts.jsonl"
    echo "== step 4: the flink-aggregates records"
    $rivulet udf test $wasm/udf_format_aggregate.wasm --input "$tmp/counts.jsonl"

# Real Apache Kafka for the workshop (needs a Docker engine): localhost:9094 from the host.
kafka-up:
    docker compose up -d kafka1 kafka-init
    @echo "Kafka at localhost:9094 (kafka1:9092 inside the compose network)"

# Stop the compose services.
kafka-down:
    docker compose down

# Validate docker-compose.yml without a Docker engine (Debian's docker-compose).
# Puts `rivulet` on PATH (~/.cargo/bin), from the release build (which `just demo` then uses too).
install:
    cargo build --release -p rivulet
    install -m 755 target/release/rivulet "${CARGO_HOME:-$HOME/.cargo}/bin/rivulet"
    @echo "installed: $(command -v rivulet || echo "${CARGO_HOME:-$HOME/.cargo}/bin/rivulet (add it to PATH)")"

compose-check:
    @command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
    docker-compose -f docker-compose.yml config -q
    @echo "docker-compose.yml is valid"

# Pipeline figures: records/s and CPU per record (file source, mock broker), fire lateness.
bench-pipeline: udfs
    cargo bench -p rivulet --bench pipeline

# Per-record cost of the built-in filter + project stages against a Wasm map doing the same.
bench-expr: udfs
    cargo bench -p rivulet --bench expr_stage

# Per-record cost of an enrich stage (hit, miss), a file job with and without it, memory per 100k table rows.
bench-enrich:
    cargo bench -p rivulet --bench enrich_stage

# The Kafka tests against a separate Tansu broker process (installed once, cached): the
# pipeline tests, then kill -9 and broker-restart fault tests checked against ground truth.
test-tansu: udfs test-guests
    scripts/with-tansu cargo test --release -p rivulet --test it -- --test-threads 1 pipeline_kafka:: faults_tansu:: cluster:: exactly_once:: sql::step5_script sql_upsert::sales_script

# Fleet-wide swap latency: 3 processes of one job over Kafka, N swaps (default 20), p50/p99.
bench-fleet-swap swaps="20": udfs
    cargo build --release -p rivulet
    scripts/bench-fleet-swap {{ swaps }}

# Scale-out figures (issue 11): 1M orders from 6 partitions read by 1, 2 and 3 processes of one
# job over Kafka (Tansu), and the pause a SIGKILL of one of two processes causes.
# `just bench-scale --embedded` runs against the embedded broker instead.
bench-scale *args: build
    scripts/with-tansu "$(scripts/python-venv)" scripts/bench-scale {{ args }}

# Kafka path figures: rivulet reading a backlog vs a plain librdkafka drain (Tansu, 1M orders).
bench-kafka:
    scripts/with-tansu cargo bench -p rivulet --bench kafka_path

# Exactly-once against at-least-once: throughput, CPU per record, window end → visible (p50/p99).
bench-eos:
    scripts/with-tansu cargo bench -p rivulet --bench exactly_once

# Sales SQL job figures (issue 10): records/s and CPU per record of pipelines/sales-per-store.sql
# over N Avro records (default 1M) beside the same job as TOML specs; planning time.
bench-sql records="1000000": build (udf "parse-sales") (udf "sum-sales")
    scripts/bench-sql {{ records }}

# Hot-swap figures: pause per swap, rebuilt file to first new output.
bench-swap: udfs test-guests
    cargo bench -p rivulet --bench swap

# `just bench-edit-loop --rivulet target/demo/rivulet` measures the unoptimised host.
# The participant's loop (issue 9): UDF source edit → `just udf` → the demo swaps it in (medians of 10).
bench-edit-loop *args: udfs build
    scripts/bench-edit-loop {{ args }}

# Shadow-swap figures (issue 13): promote → first result of the new module (in process), then
# the live job's throughput with and without a shadow (whole processes, medians of 3).
bench-shadow: udfs test-guests
    cargo bench -p rivulet --bench shadow
    cargo build --release -p rivulet
    scripts/bench-shadow

# Cost per record (issue 7): the same job as whole processes, interleaved, 3 runs each — Wasm
# parse (1 and 2 tasks), built-in JSON parse, native parse, the line-split floor, a CPython
# json.loads loop. Args go to the script: `--runs 5`, `--five-m` (also 5M orders), `--variants acd`.
bench-flink-shape *args: (udf "parse-orders")
    cargo build --release -p rivulet -p rivulet-native-udfs --bin rivulet --bin flink-shape
    scripts/bench-flink-shape {{ args }}
