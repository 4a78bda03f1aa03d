# rivulet's recipes. CI runs `just test` (via .ci/run), so local = CI.

set shell := ["bash", "-euo", "pipefail", "-c"]

udf_crates := "udf-parse-orders udf-parse-sales udf-high-value udf-order-summary udf-count-by-status udf-format-aggregate udf-avg-amount udf-sum-sales hostile-guest"

# List the recipes.
default:
    @just --list

# Install what the build needs (idempotent): the wasm32-wasip2 target.
setup:
    @rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Build every UDF (and the sandbox tests' hostile guest) as wasm32-wasip2 components.
udfs: setup
    cargo build --profile wasm --target wasm32-wasip2 {{ prepend("-p ", udf_crates) }}
    @ls -l target/wasm32-wasip2/wasm/*.wasm | awk '{ printf "  %-48s %8d bytes\n", $9, $5 }'

# Build one UDF (e.g. `just udf parse-orders`).
udf name: setup
    cargo build --profile wasm --target wasm32-wasip2 -p udf-{{ name }}

# The host binary, optimised.
build:
    cargo build --release -p rivulet

# Everything CI checks: UDFs, then every test of the workspace.
test: udfs
    cargo test --release --workspace

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --release -- -D warnings

# Benchmarks: parse UDF per-record cost (Wasm vs native), module cache hit vs miss.
bench: udfs
    cargo bench -p rivulet --bench parse_batch

# Run a UDF over a sample file, e.g. `just try parse-orders samples/orders.jsonl`.
try name input: (udf name)
    cargo run --release -q -p rivulet -- udf test target/wasm32-wasip2/wasm/udf_{{ replace(name, "-", "_") }}.wasm --input {{ input }}
