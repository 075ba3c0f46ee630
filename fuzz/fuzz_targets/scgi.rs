// An SCGI request head (netstring of NUL-separated headers, CONTENT_LENGTH first) and
// the request built from it; `fuzzing::scgi` asserts the limits and the header order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fcgi_shim::fuzzing::scgi(data);
});
