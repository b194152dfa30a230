//! The plan compiler never panics on arbitrary text; a plan it accepts routes a call.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(plan) = holdless::routing::compile_toml(text, 1) {
        let mut call = holdless::domain::Call::new("fuzz");
        call.explain = true;
        let now = chrono::DateTime::<chrono::Utc>::from_timestamp(1_790_000_000, 0).expect("fixed instant");
        let _ = holdless::routing::decide(&plan, &call, None, now);
    }
});
