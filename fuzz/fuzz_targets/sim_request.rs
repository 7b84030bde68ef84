#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_sim::fuzzing::request_body(data));
