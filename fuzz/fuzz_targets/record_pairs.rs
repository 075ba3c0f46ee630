// The wire format without I/O: name-value pairs (both decoders), a record header and a
// BEGIN_REQUEST body, on arbitrary bytes.
#![no_main]

use fcgi_shim::record::{BeginRequest, HEADER_LEN, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let n = fcgi_shim::fuzzing::pairs(data);
    // Every pair takes at least two length bytes.
    assert!(n <= data.len() / 2);

    if let Some(h) = data.first_chunk::<HEADER_LEN>() {
        let header = Header::parse(h);
        assert_eq!(header.to_bytes()[..7], h[..7], "header round trip");
        assert_eq!(header.body_len(), header.content_length as usize + h[6] as usize);
    }
    match BeginRequest::parse(data) {
        Some(b) => {
            assert!(data.len() >= 8);
            assert_eq!(BeginRequest::parse(&b.to_bytes()), Some(b));
            assert_eq!(b.keep_conn(), data[2] & 1 == 1);
        }
        None => assert!(data.len() < 8),
    }
});
