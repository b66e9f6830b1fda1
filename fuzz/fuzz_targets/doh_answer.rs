#![no_main]
// The harness and its assertions live in the library (src/fuzz.rs), so that
// tests/fuzz_corpus.rs replays the corpus through the same code under `cargo test`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stubborn::fuzz::doh_answer(data));
