//! CEL rule expressions: compiling and evaluating arbitrary text never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    if let Ok(expr) = holdless::routing::expr::Expr::compile(src) {
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("k".to_string(), "v".to_string());
        let vars = holdless::routing::expr::ExprVars {
            caller: "+12125550100",
            dialed: "+18005550199",
            country: "US",
            region: "US-NY",
            time_zone: "America/New_York",
            customer_id: "c1",
            customer_status: "gold",
            language: "en",
            intent: "billing",
            campaign: "",
            tracking_code: "",
            local_hour: 9,
            attributes: &attributes,
        };
        let _ = expr.eval(&vars);
    }
});
