//! How an aggregate's accumulator is stored as bytes: JSON, except that the floats JSON
//! cannot hold (NaN, +∞, -∞) are written as the strings `"NaN"`, `"Infinity"` and
//! `"-Infinity"` and read back as floats wherever a float is expected. Everything else is
//! plain `serde_json`, so accumulators written before keep decoding.
//!
//! Both directions wrap `serde_json`'s serializer and deserializer, handing every nested
//! value through the wrapper so that floats at any depth are seen.

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};
use std::fmt;

const NAN: &str = "NaN";
const INFINITY: &str = "Infinity";
const NEG_INFINITY: &str = "-Infinity";

/// `value` as accumulator bytes.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    value.serialize(Floats(&mut serde_json::Serializer::new(&mut out)))?;
    Ok(out)
}

/// Accumulator bytes as a `T`.
pub(crate) fn decode<T: de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Floats(&mut de))?;
    de.end()?;
    Ok(value)
}

fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        NAN
    } else if v > 0.0 {
        INFINITY
    } else {
        NEG_INFINITY
    }
}

fn named_float(name: &str) -> Option<f64> {
    match name {
        NAN => Some(f64::NAN),
        INFINITY => Some(f64::INFINITY),
        NEG_INFINITY => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The float that text stands for where a float is expected: a non-finite float's name, or
/// a number (as JSON object keys hold them).
fn float_text(float: bool, text: &str) -> Option<f64> {
    if !float {
        return None;
    }
    named_float(text).or_else(|| text.parse().ok().filter(|f: &f64| f.is_finite()))
}

/// A serializer, deserializer or one of their parts whose nested values keep the float rule.
struct Floats<T>(T);

/// A value serialized through [`Floats`].
struct Wrap<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Floats(s))
    }
}

macro_rules! forward_ser {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> { self.0.$method(v) })*
    };
}

impl<S: Serializer> Serializer for Floats<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Floats<S::SerializeSeq>;
    type SerializeTuple = Floats<S::SerializeTuple>;
    type SerializeTupleStruct = Floats<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Floats<S::SerializeTupleVariant>;
    type SerializeMap = Floats<S::SerializeMap>;
    type SerializeStruct = Floats<S::SerializeStruct>;
    type SerializeStructVariant = Floats<S::SerializeStructVariant>;

    forward_ser!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            self.0.serialize_f32(v)
        } else {
            self.0.serialize_str(non_finite(f64::from(v)))
        }
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            self.0.serialize_f64(v)
        } else {
            self.0.serialize_str(non_finite(v))
        }
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wrap(v))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wrap(v))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrap(v))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Floats)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Floats)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Floats)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Floats)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Floats)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Floats)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Floats)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl<S: ser::$trait> ser::$trait for Floats<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), S::Error> {
                self.0.$method(&Wrap(v))
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl<S: ser::SerializeMap> ser::SerializeMap for Floats<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Wrap(key))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Wrap(v))
    }
    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

macro_rules! fields {
    ($trait:ident) => {
        impl<S: ser::$trait> ser::$trait for Floats<S> {
            type Ok = S::Ok;
            type Error = S::Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), S::Error> {
                self.0.serialize_field(key, &Wrap(v))
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
                self.0.skip_field(key)
            }
            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

fields!(SerializeStruct);
fields!(SerializeStructVariant);

macro_rules! forward_de {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method($($arg,)* Visit { inner: visitor, float: false })
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Floats<D> {
    type Error = D::Error;

    forward_de!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Visit {
            inner: visitor,
            float: true,
        })
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(Visit {
            inner: visitor,
            float: true,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor whose nested values keep the float rule; `float` when a float is expected.
struct Visit<V> {
    inner: V,
    float: bool,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> { self.inner.$method(v) })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match float_text(self.float, v) {
            Some(f) => self.inner.visit_f64(f),
            None => self.inner.visit_str(v),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match float_text(self.float, v) {
            Some(f) => self.inner.visit_f64(f),
            None => self.inner.visit_borrowed_str(v),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        match float_text(self.float, &v) {
            Some(f) => self.inner.visit_f64(f),
            None => self.inner.visit_string(v),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        if self.float {
            return Err(E::custom(
                "null where a float is expected (SDKs before this one stored NaN and ±infinity as null, losing the value)",
            ));
        }
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Floats(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Floats(d))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(Floats(seq))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Floats(map))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Floats(data))
    }
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Floats<T> {
    type Value = T::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(Floats(d))
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Floats<A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Floats(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Floats<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Floats(seed))
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Floats(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Floats<A> {
    type Error = A::Error;
    type Variant = Floats<A::Variant>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        self.0
            .variant_seed(Floats(seed))
            .map(|(value, variant)| (value, Floats(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Floats<A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Floats(seed))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(
            len,
            Visit {
                inner: visitor,
                float: false,
            },
        )
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(
            fields,
            Visit {
                inner: visitor,
                float: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, Serialize, Deserialize)]
    struct Stats {
        sum: f64,
        small: f32,
        maybe: Option<f64>,
        list: Vec<f64>,
        by_name: BTreeMap<String, f64>,
        label: String,
        shape: Shape,
    }

    #[derive(Debug, Serialize, Deserialize)]
    enum Shape {
        Point(f64, f64),
        Circle { r: f64 },
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn non_finite_floats_round_trip_at_any_depth() {
        let stats = Stats {
            sum: f64::NAN,
            small: f32::NEG_INFINITY,
            maybe: Some(f64::INFINITY),
            list: vec![1.5, f64::NEG_INFINITY, f64::NAN],
            by_name: BTreeMap::from([("x".to_owned(), f64::INFINITY)]),
            label: "NaN".to_owned(),
            shape: Shape::Point(f64::NAN, 2.0),
        };
        let bytes = encode(&stats).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"sum":"NaN","small":"-Infinity","maybe":"Infinity","list":[1.5,"-Infinity","NaN"],"by_name":{"x":"Infinity"},"label":"NaN","shape":{"Point":["NaN",2.0]}}"#
        );
        let back: Stats = decode(&bytes).unwrap();
        assert!(back.sum.is_nan());
        assert_eq!(back.small, f32::NEG_INFINITY);
        assert_eq!(back.maybe, Some(f64::INFINITY));
        assert!(
            back.list
                .iter()
                .zip([1.5, f64::NEG_INFINITY, f64::NAN])
                .all(|(&a, b)| same(a, b))
        );
        assert_eq!(back.by_name["x"], f64::INFINITY);
        assert_eq!(back.label, "NaN", "a string field keeps the text");
        assert!(matches!(back.shape, Shape::Point(x, y) if x.is_nan() && y == 2.0));

        let circle: Shape = decode(&encode(&Shape::Circle { r: f64::INFINITY }).unwrap()).unwrap();
        assert!(matches!(circle, Shape::Circle { r } if r == f64::INFINITY));
    }

    #[test]
    fn finite_values_are_plain_json() {
        let bytes = encode(&(1.25f64, 3u8, "x")).unwrap();
        assert_eq!(bytes, br#"[1.25,3,"x"]"#);
        let back: (f64, u8, String) = decode(&bytes).unwrap();
        assert_eq!(back, (1.25, 3, "x".to_owned()));
    }

    #[test]
    fn a_float_stored_as_null_says_so() {
        let err = decode::<Vec<f64>>(b"[1.0,null]").unwrap_err().to_string();
        assert!(
            err.starts_with("null where a float is expected (SDKs before this one stored NaN"),
            "{err}"
        );
    }

    #[test]
    fn other_text_where_a_float_is_expected_is_a_type_error() {
        let err = decode::<f64>(br#""nan""#).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid type: string \"nan\", expected f64"),
            "{err}"
        );
    }

    #[test]
    fn float_map_keys_still_decode() {
        let back: Vec<(f64, u8)> = decode(b"[[1.5,1]]").unwrap();
        assert_eq!(back, [(1.5, 1)]);
        let keyed: BTreeMap<u32, f64> = decode(br#"{"7":"NaN"}"#).unwrap();
        assert!(keyed[&7].is_nan());
    }

    /// Multiplies its rows: overflows to infinity, then infinity times zero is NaN.
    struct Product;

    impl crate::Aggregate for Product {
        type Input = f64;
        type Acc = f64;
        type Output = f64;
        fn create() -> f64 {
            1.0
        }
        fn add(acc: &mut f64, input: f64) {
            *acc *= input;
        }
        fn merge(a: f64, b: f64) -> f64 {
            a * b
        }
        fn finish(acc: f64, _window: &crate::Window) -> f64 {
            acc
        }
    }

    fn rows(values: &[f64]) -> crate::__private::Batch {
        let mut builder = crate::__private::BatchBuilder::new();
        for v in values {
            builder.push(v).unwrap();
        }
        builder.finish()
    }

    #[test]
    fn an_accumulator_that_overflows_to_infinity_then_nan_keeps_counting() {
        use crate::__private::{
            aggregate_add, aggregate_create, aggregate_finish, aggregate_merge,
        };
        let empty = aggregate_create::<Product>();
        let out = aggregate_add::<Product>(vec![empty.clone()], &rows(&[1e308, 1e308]), &[0, 0]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.accs, [br#""Infinity""#.to_vec()]);
        let out = aggregate_add::<Product>(out.accs, &rows(&[0.0]), &[0]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.accs, [br#""NaN""#.to_vec()]);
        let merged = aggregate_merge::<Product>(vec![(empty, br#""-Infinity""#.to_vec())]).unwrap();
        assert_eq!(merged, [br#""-Infinity""#.to_vec()]);

        let window = |acc: Vec<u8>| rivulet_rows::WindowAcc {
            key: crate::Scalar::Null,
            window_start: 0,
            window_end: 10,
            acc,
        };
        let finished = aggregate_finish::<Product>(vec![
            window(out.accs[0].clone()),
            window(merged[0].clone()),
        ]);
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        let values = finished.rows.column("value").unwrap();
        assert!(values.f64_at(0).unwrap().is_nan());
        assert_eq!(values.f64_at(1), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn decode_errors_name_the_cause() {
        use crate::__private::aggregate_finish;
        let window = |acc: &[u8]| rivulet_rows::WindowAcc {
            key: crate::Scalar::Null,
            window_start: 0,
            window_end: 10,
            acc: acc.to_vec(),
        };
        let out = aggregate_finish::<Product>(vec![
            window(b"]broken"),
            window(br#"{"a":1}"#),
            window(b"null"),
        ]);
        let messages: Vec<&str> = out.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 3);
        assert!(
            messages[0].starts_with("accumulator is not valid JSON (7 bytes): "),
            "{}",
            messages[0]
        );
        assert!(
            messages[1]
                .starts_with("accumulator does not fit `f64`: invalid type: map, expected f64"),
            "{}",
            messages[1]
        );
        assert!(
            messages[2]
                .starts_with("accumulator does not fit `f64`: null where a float is expected"),
            "{}",
            messages[2]
        );
    }
}
