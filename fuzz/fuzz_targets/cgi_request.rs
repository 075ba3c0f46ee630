// CGI variables (as an FCGI_PARAMS block) to an `http::Request`: mount prefix, URI,
// headers; `fuzzing::cgi_request` asserts the invariants. The first byte chooses the
// process-wide FORCE_SCRIPT_NAME.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, block)) = data.split_first() else {
        return;
    };
    let forced = match first % 4 {
        0 => None,
        1 => Some(""),
        2 => Some("/app"),
        _ => Some("/x/"),
    };
    fcgi_shim::fuzzing::cgi_request(block, forced);
});
