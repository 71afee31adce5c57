//! AMF0 decoding of arbitrary bytes; whatever decodes must re-encode and decode to the
//! same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtmp::amf0;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = amf0::decode_all(data) {
        let again = amf0::decode_all(&amf0::encode_all(&values)).expect("re-encoded AMF0 decodes");
        // NaN never equals itself; compare the encodings instead.
        assert_eq!(amf0::encode_all(&again), amf0::encode_all(&values));
    }
});
