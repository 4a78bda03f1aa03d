//! Host bindings of the WIT contract (`wit/udf.wit`): one module per world, sharing the
//! `types` interface generated once in `parse`. Exports are async: a call is a future the
//! host can abandon (see [`super::deadline`]).

/// The parse world, and the shared `rivulet:udf/types` interface.
pub mod parse {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "parse",
        exports: { default: async },
    });
}

/// The map world.
pub mod map {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "%map",
        with: { "rivulet:udf/types": super::parse::rivulet::udf::types },
        exports: { default: async },
    });
}

/// The aggregate world.
pub mod aggregate {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregate",
        with: { "rivulet:udf/types": super::parse::rivulet::udf::types },
        exports: { default: async },
    });
}

/// The format world.
pub mod format {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "format",
        with: { "rivulet:udf/types": super::parse::rivulet::udf::types },
        exports: { default: async },
    });
}

/// The contract's types, as the host's bindings see them.
pub use parse::rivulet::udf::types as wit;
