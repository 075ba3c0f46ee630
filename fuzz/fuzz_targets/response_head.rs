// Encoding a CGI response head from arbitrary statuses and header bytes: CR, LF and NUL
// must be refused, nothing may panic. `fuzzing::response_head` asserts the line shape.
//
// Input: 2 bytes of status (big endian), then headers as `name \0 value \0` pieces
// (a NUL cannot appear in a valid header, so it is free to use as the separator).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = u16::from_be_bytes(*status);
    let mut parts = rest.split(|&b| b == 0);
    let mut headers = Vec::new();
    while let Some(name) = parts.next() {
        let value = parts.next().unwrap_or_default();
        headers.push((name.to_vec(), value.to_vec()));
    }
    fcgi_shim::fuzzing::response_head(status, &headers);
});
