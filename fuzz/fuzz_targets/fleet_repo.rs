#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_schema::fuzzing::fleet_repo(data));
