//! Attribute macros behind `rivulet-sdk`: `#[parse]`, `#[map]`, `#[format]` and `#[aggregate]`.
//!
//! Use them through `rivulet_sdk` (`#[rivulet_sdk::parse]`); this crate's paths are not stable.
//! Each macro keeps the participant's item as written, adds a batch function that the host
//! can also call natively, and, on `wasm32`, a hidden module that generates the component
//! bindings from rivulet's WIT (embedded here at build time) and exports them.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, ItemImpl, PathArguments, ReturnType, Type};

/// The contract, embedded so that bindings never depend on a path at the user's site.
const WIT: &str = include_str!("../../../wit/udf.wit");

/// Marks `fn(RawRecord) -> rows` as the component's parse step.
#[proc_macro_attribute]
pub fn parse(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, Kind::Parse)
}

/// Marks `fn(Row) -> rows` as the component's map/filter/flat-map step.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, Kind::Map)
}

/// Marks `fn(Row) -> payload` as the component's format step.
#[proc_macro_attribute]
pub fn format(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, Kind::Format)
}

/// Marks `impl Aggregate for T` as the component's aggregate.
#[proc_macro_attribute]
pub fn aggregate(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error(
            TokenStream2::from(attr).span(),
            "#[aggregate] takes no arguments",
        );
    }
    let item_impl = match syn::parse::<ItemImpl>(item) {
        Ok(item_impl) => item_impl,
        Err(err) => {
            return error(
                err.span(),
                "#[aggregate] goes on `impl rivulet_sdk::Aggregate for YourType { ... }`",
            );
        }
    };
    match expand_aggregate(&item_impl) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#err #item_impl).into()
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Parse,
    Map,
    Format,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Parse => "#[parse]",
            Kind::Map => "#[map]",
            Kind::Format => "#[format]",
        }
    }
}

fn error(span: Span, message: &str) -> TokenStream {
    syn::Error::new(span, message).to_compile_error().into()
}

fn expand(attr: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    if !attr.is_empty() {
        return error(
            TokenStream2::from(attr).span(),
            &format!("{} takes no arguments", kind.attr()),
        );
    }
    let func = match syn::parse::<ItemFn>(item) {
        Ok(func) => func,
        Err(err) => {
            return error(
                err.span(),
                &format!("{} goes on a plain function", kind.attr()),
            );
        }
    };
    match expand_fn(&func, kind) {
        Ok(tokens) => tokens.into(),
        // Keep the item so the error is the only one the participant sees.
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#err #func).into()
        }
    }
}

/// What a step function returns, read from its signature.
struct Returns {
    fallible: bool,
    shape: Shape,
}

#[derive(Clone, Copy)]
enum Shape {
    One,
    Optional,
    Many,
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    }
}

fn first_type_arg(segment: &syn::PathSegment) -> Option<&Type> {
    match &segment.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        }),
        _ => None,
    }
}

fn read_returns(ty: &Type) -> Returns {
    let (fallible, inner) = match last_segment(ty) {
        Some(seg) if seg.ident == "Result" => (true, first_type_arg(seg).unwrap_or(ty)),
        _ => (false, ty),
    };
    let shape = match last_segment(inner) {
        Some(seg) if seg.ident == "Option" => Shape::Optional,
        Some(seg) if seg.ident == "Vec" => Shape::Many,
        _ => Shape::One,
    };
    Returns { fallible, shape }
}

fn check_signature(func: &ItemFn, kind: Kind) -> syn::Result<(&Type, &Type)> {
    let sig = &func.sig;
    let what = kind.attr();
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            format!("{what} functions cannot be async"),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!("{what} functions cannot be generic"),
        ));
    }
    let expected_arg = match kind {
        Kind::Parse => "one `RawRecord` argument",
        Kind::Map | Kind::Format => "one argument: the row type, deserialized from each input row",
    };
    let mut inputs = sig.inputs.iter();
    let arg = match (inputs.next(), inputs.next()) {
        (Some(FnArg::Typed(arg)), None) => arg,
        (Some(FnArg::Receiver(receiver)), _) => {
            return Err(syn::Error::new(
                receiver.span(),
                format!("{what} functions take {expected_arg}, not `self`"),
            ));
        }
        (Some(_), Some(extra)) => {
            return Err(syn::Error::new_spanned(
                extra,
                format!("{what} functions take {expected_arg}"),
            ));
        }
        (None, _) => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!("{what} functions take {expected_arg}"),
            ));
        }
    };
    if kind == Kind::Parse {
        match last_segment(&arg.ty) {
            Some(seg) if seg.ident == "RawRecord" => {}
            _ => {
                return Err(syn::Error::new_spanned(
                    &arg.ty,
                    "#[parse] functions take one `RawRecord` argument (the Kafka record)",
                ));
            }
        }
    } else if let Type::Reference(reference) = &*arg.ty {
        return Err(syn::Error::new_spanned(
            reference,
            format!("{what} functions take their row by value (it may borrow `&str` fields)"),
        ));
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) if !matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()) => &**ty,
        _ => {
            let expected = match kind {
                Kind::Format => {
                    "#[format] functions must return the payload: `String`, `Vec<u8>`, `Payload`, or `Result<_, E>` of one of them"
                }
                _ => {
                    "this function must return the rows it produces: `T`, `Option<T>`, `Vec<T>`, or `Result<_, E>` of one of them"
                }
            };
            let span = match &sig.output {
                ReturnType::Type(_, ty) => ty.span(),
                ReturnType::Default => sig.ident.span(),
            };
            return Err(syn::Error::new(span, expected));
        }
    };
    Ok((&arg.ty, ret))
}

fn expand_fn(func: &ItemFn, kind: Kind) -> syn::Result<TokenStream2> {
    let (arg_ty, ret_ty) = check_signature(func, kind)?;
    let name = &func.sig.ident;
    let returns = read_returns(ret_ty);
    let span = ret_ty.span();
    let sdk = quote!(::rivulet_sdk::__private);

    let batch_fn = match kind {
        Kind::Parse | Kind::Map => {
            let emit = match returns.shape {
                Shape::One => quote_spanned!(span=> out.push(index, &value);),
                Shape::Optional => {
                    quote_spanned!(span=> if let ::core::option::Option::Some(value) = value { out.push(index, &value); })
                }
                Shape::Many => {
                    quote_spanned!(span=> for value in value { out.push(index, &value); })
                }
            };
            let handle = if returns.fallible {
                quote_spanned!(span=> match result {
                    ::core::result::Result::Ok(value) => { #emit }
                    ::core::result::Result::Err(err) => out.error(index, &err),
                })
            } else {
                quote!(let value = result; #emit)
            };
            if kind == Kind::Parse {
                quote! {
                    /// Runs the parse step over a batch of raw records (called by the host).
                    #[doc(hidden)]
                    pub fn __rivulet_parse_batch(input: &#sdk::RawBatch) -> #sdk::RowsOut {
                        let mut out = #sdk::RowsOutBuilder::new();
                        for (index, record) in #sdk::indexed(input.iter()) {
                            let result = #name(record);
                            #handle
                        }
                        out.finish()
                    }
                }
            } else {
                quote! {
                    /// Runs the map step over a batch of rows (called by the host).
                    #[doc(hidden)]
                    pub fn __rivulet_map_batch(input: &#sdk::Batch) -> #sdk::RowsOut {
                        #sdk::new_lookup_batch();
                        let mut out = #sdk::RowsOutBuilder::new();
                        for index in 0..input.len {
                            match input.row::<#arg_ty>(index as usize) {
                                ::core::result::Result::Ok(row) => {
                                    let result = #name(row);
                                    #handle
                                }
                                ::core::result::Result::Err(err) => out.input_error(index, &err),
                            }
                        }
                        out.finish()
                    }
                }
            }
        }
        Kind::Format => {
            let handle = if returns.fallible {
                quote_spanned!(span=> match result {
                    ::core::result::Result::Ok(value) => out.push(value),
                    ::core::result::Result::Err(err) => out.error(index, &err),
                })
            } else {
                quote_spanned!(span=> out.push(result);)
            };
            quote! {
                /// Runs the format step over a batch of rows (called by the host).
                #[doc(hidden)]
                pub fn __rivulet_format_batch(input: &#sdk::Batch) -> #sdk::Encoded {
                    let mut out = #sdk::EncodedBuilder::new();
                    for index in 0..input.len {
                        match input.row::<#arg_ty>(index as usize) {
                            ::core::result::Result::Ok(row) => {
                                let result = #name(row);
                                #handle
                            }
                            ::core::result::Result::Err(err) => out.input_error(index, &err),
                        }
                    }
                    out.finish()
                }
            }
        }
    };

    let (world, guest_impl) = match kind {
        Kind::Parse => (
            "parse",
            quote! {
                fn parse(input: #sdk::RawBatch) -> #sdk::RowsOut {
                    super::__rivulet_parse_batch(&input)
                }
            },
        ),
        Kind::Map => (
            "map",
            quote! {
                fn map(input: #sdk::Batch) -> #sdk::RowsOut {
                    super::__rivulet_map_batch(&input)
                }
            },
        ),
        Kind::Format => (
            "format",
            quote! {
                fn format(input: #sdk::Batch) -> #sdk::Encoded {
                    super::__rivulet_format_batch(&input)
                }
            },
        ),
    };
    let export = export_module(world, guest_impl);
    Ok(quote! {
        #func
        #batch_fn
        #export
    })
}

fn expand_aggregate(item: &ItemImpl) -> syn::Result<TokenStream2> {
    let is_aggregate = item
        .trait_
        .as_ref()
        .and_then(|(bang, path, _)| match bang {
            None => path.segments.last(),
            Some(_) => None,
        })
        .is_some_and(|seg| seg.ident == "Aggregate");
    if !is_aggregate {
        return Err(syn::Error::new(
            item.self_ty.span(),
            "#[aggregate] goes on `impl rivulet_sdk::Aggregate for YourType { ... }`",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "#[aggregate] types cannot be generic",
        ));
    }
    let ty = &item.self_ty;
    let sdk = quote!(::rivulet_sdk::__private);
    let guest_impl = quote! {
        fn state_version() -> u32 {
            <super::#ty as ::rivulet_sdk::Aggregate>::STATE_VERSION
        }
        fn create() -> ::std::vec::Vec<u8> {
            #sdk::aggregate_create::<super::#ty>()
        }
        fn add(
            accs: ::std::vec::Vec<::std::vec::Vec<u8>>,
            rows: #sdk::Batch,
            groups: ::std::vec::Vec<u32>,
        ) -> #sdk::AddOut {
            #sdk::aggregate_add::<super::#ty>(accs, &rows, &groups)
        }
        fn merge(
            pairs: ::std::vec::Vec<(::std::vec::Vec<u8>, ::std::vec::Vec<u8>)>,
        ) -> ::core::result::Result<::std::vec::Vec<::std::vec::Vec<u8>>, ::std::string::String> {
            #sdk::aggregate_merge::<super::#ty>(pairs)
        }
        fn finish(windows: ::std::vec::Vec<#sdk::WindowAcc>) -> #sdk::RowsOut {
            #sdk::aggregate_finish::<super::#ty>(windows)
        }
    };
    let export = export_module("aggregate", guest_impl);
    Ok(quote! {
        #item
        #export
    })
}

/// The hidden module that binds the world and exports `guest_impl` (wasm32 only, so the
/// same crate also builds natively for tests and benchmarks).
fn export_module(world: &str, guest_impl: TokenStream2) -> TokenStream2 {
    let module = syn::Ident::new(&format!("__rivulet_export_{world}"), Span::call_site());
    quote! {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod #module {
            ::rivulet_sdk::__private::wit_bindgen::generate!({
                inline: #WIT,
                world: #world,
                runtime_path: "::rivulet_sdk::__private::wit_bindgen::rt",
                with: {
                    "rivulet:udf/types@0.1.0": ::rivulet_sdk::__private::types,
                },
            });

            struct Udf;

            impl Guest for Udf {
                #guest_impl
            }

            export!(Udf);
        }
    }
}
