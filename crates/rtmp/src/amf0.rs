//! AMF0 encoding and decoding (Action Message Format 0, Adobe AMF0 specification
//! section 2). Used by RTMP command messages (type 20) and data messages (type 18).
//!
//! The decoder is defensive: nesting is bounded by [`MAX_AMF_DEPTH`] (SRS 6.0.157 crashed
//! on a deeply nested connect object), and array lengths announced by the peer never
//! drive an allocation larger than the bytes actually present.

use bytes::{BufMut, BytesMut};

/// Deepest nesting of objects/arrays accepted from the network.
pub const MAX_AMF_DEPTH: usize = 32;

const MARKER_NUMBER: u8 = 0x00;
const MARKER_BOOLEAN: u8 = 0x01;
const MARKER_STRING: u8 = 0x02;
const MARKER_OBJECT: u8 = 0x03;
const MARKER_NULL: u8 = 0x05;
const MARKER_UNDEFINED: u8 = 0x06;
const MARKER_ECMA_ARRAY: u8 = 0x08;
const MARKER_OBJECT_END: u8 = 0x09;
const MARKER_STRICT_ARRAY: u8 = 0x0A;
const MARKER_DATE: u8 = 0x0B;
const MARKER_LONG_STRING: u8 = 0x0C;

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// Anonymous object: ordered key/value pairs.
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// ECMA (associative) array, used by `onMetaData`.
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the epoch, plus the (unused, per spec) time-zone field.
    Date {
        millis: f64,
        time_zone: i16,
    },
    LongString(String),
}

/// Why an AMF0 buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    #[error("AMF0 value truncated")]
    Truncated,
    #[error("unsupported AMF0 type marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    #[error("AMF0 nesting deeper than {MAX_AMF_DEPTH} levels")]
    TooDeep,
    #[error("AMF0 string longer than 65535 bytes cannot be written as a short string")]
    StringTooLong,
}

impl Amf0Value {
    /// The value as a string slice, for `String` and `LongString`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// Looks up a property of an object or ECMA array by name.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Shorthand for an object built from `(&str, value)` pairs.
    pub fn object<I, K>(pairs: I) -> Amf0Value
    where
        I: IntoIterator<Item = (K, Amf0Value)>,
        K: Into<String>,
    {
        Amf0Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Shorthand for a string value.
    pub fn string(s: impl Into<String>) -> Amf0Value {
        Amf0Value::String(s.into())
    }

    /// Appends the encoding of this value. Strings longer than 65535 bytes are
    /// written as long strings.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Amf0Value::Number(n) => {
                out.put_u8(MARKER_NUMBER);
                out.put_f64(*n);
            }
            Amf0Value::Boolean(b) => {
                out.put_u8(MARKER_BOOLEAN);
                out.put_u8(u8::from(*b));
            }
            Amf0Value::String(s) | Amf0Value::LongString(s) => {
                if s.len() <= u16::MAX as usize && matches!(self, Amf0Value::String(_)) {
                    out.put_u8(MARKER_STRING);
                    put_short_string(out, s);
                } else {
                    out.put_u8(MARKER_LONG_STRING);
                    out.put_u32(s.len() as u32);
                    out.put_slice(s.as_bytes());
                }
            }
            Amf0Value::Object(props) => {
                out.put_u8(MARKER_OBJECT);
                encode_properties(out, props);
            }
            Amf0Value::Null => out.put_u8(MARKER_NULL),
            Amf0Value::Undefined => out.put_u8(MARKER_UNDEFINED),
            Amf0Value::EcmaArray(props) => {
                out.put_u8(MARKER_ECMA_ARRAY);
                out.put_u32(props.len() as u32);
                encode_properties(out, props);
            }
            Amf0Value::StrictArray(items) => {
                out.put_u8(MARKER_STRICT_ARRAY);
                out.put_u32(items.len() as u32);
                for item in items {
                    item.encode(out);
                }
            }
            Amf0Value::Date { millis, time_zone } => {
                out.put_u8(MARKER_DATE);
                out.put_f64(*millis);
                out.put_i16(*time_zone);
            }
        }
    }
}

/// Property names longer than a short string can hold are truncated: AMF0 has no
/// other representation for them.
fn put_short_string(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn encode_properties(out: &mut BytesMut, props: &[(String, Amf0Value)]) {
    for (k, v) in props {
        put_short_string(out, k);
        v.encode(out);
    }
    out.put_slice(&[0, 0, MARKER_OBJECT_END]);
}

/// Encodes a sequence of values back to back (a command or data message body).
pub fn encode_all(values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::with_capacity(128);
    for v in values {
        v.encode(&mut out);
    }
    out
}

/// Decodes values until the buffer is exhausted.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut values = Vec::new();
    while !buf.is_empty() {
        values.push(decode(&mut buf)?);
    }
    Ok(values)
}

/// Decodes one value from the front of `buf`, advancing it.
pub fn decode(buf: &mut &[u8]) -> Result<Amf0Value, Amf0Error> {
    decode_at_depth(buf, 0)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Amf0Error> {
    if buf.len() < n {
        return Err(Amf0Error::Truncated);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_u8(buf: &mut &[u8]) -> Result<u8, Amf0Error> {
    Ok(take(buf, 1)?[0])
}

fn take_u16(buf: &mut &[u8]) -> Result<u16, Amf0Error> {
    let b = take(buf, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn take_u32(buf: &mut &[u8]) -> Result<u32, Amf0Error> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_f64(buf: &mut &[u8]) -> Result<f64, Amf0Error> {
    let b = take(buf, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(f64::from_be_bytes(a))
}

fn take_string(buf: &mut &[u8], len: usize) -> Result<String, Amf0Error> {
    Ok(String::from_utf8_lossy(take(buf, len)?).into_owned())
}

fn decode_at_depth(buf: &mut &[u8], depth: usize) -> Result<Amf0Value, Amf0Error> {
    let marker = take_u8(buf)?;
    Ok(match marker {
        MARKER_NUMBER => Amf0Value::Number(take_f64(buf)?),
        MARKER_BOOLEAN => Amf0Value::Boolean(take_u8(buf)? != 0),
        MARKER_STRING => {
            let len = take_u16(buf)? as usize;
            Amf0Value::String(take_string(buf, len)?)
        }
        MARKER_LONG_STRING => {
            let len = take_u32(buf)? as usize;
            Amf0Value::LongString(take_string(buf, len)?)
        }
        MARKER_OBJECT => Amf0Value::Object(decode_properties(buf, depth + 1)?),
        MARKER_NULL => Amf0Value::Null,
        MARKER_UNDEFINED => Amf0Value::Undefined,
        MARKER_ECMA_ARRAY => {
            // The count is advisory; the end marker terminates the array.
            let _count = take_u32(buf)?;
            Amf0Value::EcmaArray(decode_properties(buf, depth + 1)?)
        }
        MARKER_STRICT_ARRAY => {
            if depth + 1 > MAX_AMF_DEPTH {
                return Err(Amf0Error::TooDeep);
            }
            let count = take_u32(buf)? as usize;
            // Every value takes at least one byte: never reserve more than is present.
            let mut items = Vec::with_capacity(count.min(buf.len()));
            for _ in 0..count {
                items.push(decode_at_depth(buf, depth + 1)?);
            }
            Amf0Value::StrictArray(items)
        }
        MARKER_DATE => {
            let millis = take_f64(buf)?;
            let time_zone = take_u16(buf)? as i16;
            Amf0Value::Date { millis, time_zone }
        }
        other => return Err(Amf0Error::UnsupportedMarker(other)),
    })
}

fn decode_properties(buf: &mut &[u8], depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
    if depth > MAX_AMF_DEPTH {
        return Err(Amf0Error::TooDeep);
    }
    let mut props = Vec::new();
    loop {
        let len = take_u16(buf)? as usize;
        if len == 0 {
            // An empty key followed by the end marker closes the object. Some encoders
            // omit the marker at the very end of a message: accept that too.
            match buf.first() {
                Some(&MARKER_OBJECT_END) => {
                    *buf = &buf[1..];
                    return Ok(props);
                }
                None => return Ok(props),
                Some(_) => {}
            }
        }
        let key = take_string(buf, len)?;
        let value = decode_at_depth(buf, depth)?;
        props.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Amf0Value) {
        let enc = encode_all(std::slice::from_ref(&v));
        let dec = decode_all(&enc).unwrap();
        assert_eq!(dec, vec![v]);
    }

    #[test]
    fn round_trips_every_type() {
        round_trip(Amf0Value::Number(1935.5));
        round_trip(Amf0Value::Boolean(true));
        round_trip(Amf0Value::Boolean(false));
        round_trip(Amf0Value::string("connect"));
        round_trip(Amf0Value::LongString("x".repeat(70_000)));
        round_trip(Amf0Value::Null);
        round_trip(Amf0Value::Undefined);
        round_trip(Amf0Value::Date {
            millis: 1.7e12,
            time_zone: -60,
        });
        round_trip(Amf0Value::object([
            ("app", Amf0Value::string("live")),
            ("nested", Amf0Value::object([("a", Amf0Value::Number(1.0))])),
        ]));
        round_trip(Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(1280.0)),
            ("height".into(), Amf0Value::Number(720.0)),
        ]));
        round_trip(Amf0Value::StrictArray(vec![
            Amf0Value::Number(1.0),
            Amf0Value::Null,
            Amf0Value::string("s"),
        ]));
    }

    #[test]
    fn decodes_known_bytes() {
        // "_result", 1.0, null
        let bytes = [
            0x02, 0x00, 0x07, b'_', b'r', b'e', b's', b'u', b'l', b't', 0x00, 0x3f, 0xf0, 0, 0, 0,
            0, 0, 0, 0x05,
        ];
        let v = decode_all(&bytes).unwrap();
        assert_eq!(
            v,
            vec![
                Amf0Value::string("_result"),
                Amf0Value::Number(1.0),
                Amf0Value::Null
            ]
        );
    }

    #[test]
    fn ecma_array_end_marker_is_required_to_close_but_count_is_advisory() {
        // count says 5 but only one property, then end marker
        let bytes = [
            0x08, 0, 0, 0, 5, 0, 1, b'a', 0x01, 1, 0, 0, 0x09, 0x05, /* trailing null */
        ];
        let v = decode_all(&bytes).unwrap();
        assert_eq!(
            v,
            vec![
                Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Boolean(true))]),
                Amf0Value::Null
            ]
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = Vec::new();
        for _ in 0..(MAX_AMF_DEPTH + 5) {
            bytes.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        bytes.push(0x05);
        assert_eq!(decode_all(&bytes), Err(Amf0Error::TooDeep));
        let mut arr = Vec::new();
        for _ in 0..(MAX_AMF_DEPTH + 5) {
            arr.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
        }
        arr.push(0x05);
        assert_eq!(decode_all(&arr), Err(Amf0Error::TooDeep));
    }

    #[test]
    fn huge_strict_array_count_does_not_allocate() {
        let bytes = [0x0A, 0xff, 0xff, 0xff, 0xff, 0x05];
        assert_eq!(decode_all(&bytes), Err(Amf0Error::Truncated));
    }

    #[test]
    fn truncated_and_unknown() {
        assert_eq!(decode_all(&[0x00, 1, 2]), Err(Amf0Error::Truncated));
        assert_eq!(decode_all(&[0x02, 0, 9, b'a']), Err(Amf0Error::Truncated));
        assert_eq!(decode_all(&[0x11]), Err(Amf0Error::UnsupportedMarker(0x11)));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = Amf0Value> {
            let leaf = prop_oneof![
                any::<f64>()
                    .prop_filter("NaN never equals itself", |f| !f.is_nan())
                    .prop_map(Amf0Value::Number),
                any::<bool>().prop_map(Amf0Value::Boolean),
                ".{0,40}".prop_map(Amf0Value::String),
                Just(Amf0Value::Null),
                Just(Amf0Value::Undefined),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6)
                        .prop_map(Amf0Value::Object),
                    prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6)
                        .prop_map(Amf0Value::EcmaArray),
                    prop::collection::vec(inner, 0..6).prop_map(Amf0Value::StrictArray),
                ]
            })
        }

        proptest! {
            #[test]
            fn encode_decode_round_trip(vals in prop::collection::vec(value(), 0..5)) {
                let enc = encode_all(&vals);
                prop_assert_eq!(decode_all(&enc).unwrap(), vals);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_all(&bytes);
            }
        }
    }
}
