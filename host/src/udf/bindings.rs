//! Host bindings of the WIT contract (`wit/udf.wit`): one module per world. The `types`
//! interface is mapped onto `rivulet_rows` (which derives wasmtime's component traits for
//! it), so batches cross the boundary as they are: no second type family, no conversion,
//! no copy besides the canonical ABI's own. Exports are async: a call is a future the host
//! can abandon (see [`super::deadline`]).

/// The contract's types, as the host's bindings see them: `rivulet_rows`'s own, plus the
/// (empty) host side of the `types` interface that bindings of a world importing it expect.
pub mod wit {
    pub use rivulet_rows::{
        AddOut, Batch, Column, Encoded, Header, Packed, RawBatch, RecordError, RowsOut, Scalar,
        Values, WindowAcc,
    };
    use wasmtime::component::{HasData, Linker};

    /// The interface has no functions: nothing to implement.
    pub trait HostWithStore<T>: HasData {}
    impl<H: ?Sized + HasData, T> HostWithStore<T> for H {}

    /// The interface has no functions: nothing to implement.
    pub trait Host {}
    impl<H: ?Sized> Host for H {}

    /// Nothing to link: the interface only defines types.
    pub fn add_to_linker<T: 'static, D: HostWithStore<T>>(
        _linker: &mut Linker<T>,
        _host_getter: fn(&mut T) -> D::Data<'_>,
    ) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The parse world.
pub mod parse {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "parse",
        with: { "rivulet:udf/types": super::wit },
        exports: { default: async },
    });
}

/// The map world.
pub mod map {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "%map",
        with: { "rivulet:udf/types": super::wit },
        exports: { default: async },
    });
}

/// The aggregate world.
pub mod aggregate {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregate",
        with: { "rivulet:udf/types": super::wit },
        exports: { default: async },
    });
}

/// The format world.
pub mod format {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "format",
        with: { "rivulet:udf/types": super::wit },
        exports: { default: async },
    });
}
