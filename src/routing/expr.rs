//! Optional CEL expressions on rules. Compiled when the plan is validated (bounded in
//! size and nesting so the parser cannot be driven into deep recursion), evaluated only
//! for rules the structured index left as candidates.
//!
//! Variables: `caller`, `dialed`, `country`, `region`, `time_zone`, `customer_id`,
//! `customer_status`, `language`, `intent`, `campaign`, `tracking_code` (strings, empty
//! when unknown), `local_hour` (int, the caller's local hour, -1 when unknown) and
//! `attributes` (map of string to string). An expression that does not evaluate to a
//! bool, or fails (e.g. a missing map key), does not match.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::types::{CelInt, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value};

use crate::domain::limits::{MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LEN};

/// Variables an expression may use.
pub const VARIABLES: &[&str] = &[
    "caller",
    "dialed",
    "country",
    "region",
    "time_zone",
    "customer_id",
    "customer_status",
    "language",
    "intent",
    "campaign",
    "tracking_code",
    "local_hour",
    "attributes",
];

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// A compiled expression.
pub struct Expr {
    source: String,
    program: Program,
    uses_attributes: bool,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`, refusing oversized or deeply nested input and unknown variables.
    pub fn compile(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("expression is empty".into());
        }
        if source.len() > MAX_EXPRESSION_LEN {
            return Err(format!(
                "expression is {} bytes, at most {MAX_EXPRESSION_LEN} allowed",
                source.len()
            ));
        }
        let mut depth = 0usize;
        let mut max_depth = 0usize;
        for c in source.chars() {
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if max_depth > MAX_EXPRESSION_DEPTH {
            return Err(format!(
                "expression nests {max_depth} deep, at most {MAX_EXPRESSION_DEPTH} allowed"
            ));
        }
        // The generated parser recurses per operator too; a long chain of unary
        // operators is refused for the same reason as deep brackets.
        let operators = source.chars().filter(|c| matches!(c, '!' | '-')).count();
        if operators > MAX_EXPRESSION_DEPTH * 4 {
            return Err("expression has too many unary operators".into());
        }
        let program = std::panic::catch_unwind(|| env().compile(source))
            .map_err(|_| "expression could not be parsed".to_string())?
            .map_err(|e| format!("expression does not compile: {}", one_line(&e.to_string())))?;
        let references = program.references();
        for var in references.variables() {
            if !VARIABLES.contains(&var) {
                return Err(format!(
                    "expression uses unknown variable '{var}'; known: {}",
                    VARIABLES.join(", ")
                ));
            }
        }
        let uses_attributes = references.has_variable("attributes");
        Ok(Self {
            source: source.to_owned(),
            program,
            uses_attributes,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression: `Ok(bool)`, or `Err` with why it could not.
    pub fn eval(&self, vars: &ExprVars<'_>) -> Result<bool, String> {
        let attributes: Option<Box<dyn Val>> = if self.uses_attributes {
            let map: HashMap<String, String> = vars
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Box::<dyn Val>::try_from(Value::from(map)).ok()
        } else {
            None
        };
        let resolver = Resolver { vars, attributes };
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(&resolver);
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("expression gave {other:?}, not a bool")),
            Err(e) => Err(format!("expression failed: {}", one_line(&e.to_string()))),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The call's facts as CEL sees them, borrowed from the routing facts.
pub struct ExprVars<'a> {
    pub caller: &'a str,
    pub dialed: &'a str,
    pub country: &'a str,
    pub region: &'a str,
    pub time_zone: &'a str,
    pub customer_id: &'a str,
    pub customer_status: &'a str,
    pub language: &'a str,
    pub intent: &'a str,
    pub campaign: &'a str,
    pub tracking_code: &'a str,
    pub local_hour: i64,
    pub attributes: &'a std::collections::BTreeMap<String, String>,
}

struct Resolver<'a, 'b> {
    vars: &'b ExprVars<'a>,
    attributes: Option<Box<dyn Val>>,
}

impl VariableResolver for Resolver<'_, '_> {
    fn resolve<'c>(&'c self, variable: &str) -> Option<CowVal<'c, 'c>> {
        let v = self.vars;
        let s = match variable {
            "caller" => v.caller,
            "dialed" => v.dialed,
            "country" => v.country,
            "region" => v.region,
            "time_zone" => v.time_zone,
            "customer_id" => v.customer_id,
            "customer_status" => v.customer_status,
            "language" => v.language,
            "intent" => v.intent,
            "campaign" => v.campaign,
            "tracking_code" => v.tracking_code,
            "local_hour" => return Some(CowVal::owned(CelInt::from(v.local_hour))),
            "attributes" => return self.attributes.as_deref().map(CowVal::Borrowed),
            _ => return None,
        };
        Some(CowVal::owned(CelString::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(attrs: &BTreeMap<String, String>) -> ExprVars<'_> {
        ExprVars {
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
            attributes: attrs,
        }
    }

    #[test]
    fn evaluates_over_call_facts_and_attributes() {
        let mut attrs = BTreeMap::new();
        attrs.insert("vip".to_string(), "yes".to_string());
        let v = vars(&attrs);
        let e = Expr::compile("country == 'US' && attributes['vip'] == 'yes' && local_hour >= 8")
            .unwrap();
        assert_eq!(e.eval(&v), Ok(true));
        let e = Expr::compile("caller.startsWith('+1212') && customer_status != 'gold'").unwrap();
        assert_eq!(e.eval(&v), Ok(false));
    }

    #[test]
    fn missing_attribute_is_an_error_not_a_match() {
        let attrs = BTreeMap::new();
        let e = Expr::compile("attributes['vip'] == 'yes'").unwrap();
        assert!(e.eval(&vars(&attrs)).is_err());
        let e = Expr::compile("'vip' in attributes").unwrap();
        assert_eq!(e.eval(&vars(&attrs)), Ok(false));
    }

    #[test]
    fn refuses_bad_expressions() {
        assert!(Expr::compile("country ==").is_err());
        assert!(Expr::compile("unknown_var == 'x'").is_err());
        assert!(Expr::compile("").is_err());
        assert!(Expr::compile(&"(".repeat(100)).is_err());
        assert!(Expr::compile(&format!("country == '{}'", "x".repeat(2000))).is_err());
    }

    #[test]
    fn non_bool_result_does_not_match() {
        let attrs = BTreeMap::new();
        let e = Expr::compile("local_hour + 1").unwrap();
        assert!(e.eval(&vars(&attrs)).is_err());
    }
}
