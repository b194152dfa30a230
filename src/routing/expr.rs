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
use std::sync::Arc;

use cel::common::ast::{operators, LiteralValue};
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

/// The standard CEL environment. Each thread builds its own once: evaluation clones
/// the `Arc` for every expression, and one `Arc` shared by every thread made each of
/// those clones contend for its counter. A compiled [`Program`] is only its syntax
/// tree, so it runs the same under any thread's environment.
fn env() -> Arc<Env> {
    thread_local! {
        static ENV: Arc<Env> = Arc::new(Env::stdlib());
    }
    ENV.with(Arc::clone)
}

/// A compiled expression.
pub struct Expr {
    source: String,
    program: Program,
    uses_attributes: bool,
    /// Attribute keys without which the expression cannot be true (see
    /// [`required_attributes`]): a call lacking one is refused without evaluating.
    required: Vec<String>,
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
            .map_err(|e| syntax_error(source, &e))?;
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
        let mut required: Vec<String> = required_attributes(program.expression())
            .into_iter()
            .collect();
        required.sort_unstable();
        Ok(Self {
            source: source.to_owned(),
            program,
            uses_attributes,
            required,
        })
    }

    /// An attribute the expression needs and `attributes` lacks: then it cannot
    /// evaluate to true (it is false or fails), and routing need not evaluate it.
    pub fn missing_attribute<'a>(
        &'a self,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Option<&'a str> {
        self.required
            .iter()
            .find(|k| !attributes.contains_key(k.as_str()))
            .map(String::as_str)
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

/// Attribute keys whose absence keeps `e` from evaluating to true, from its syntax
/// alone. Most rules that look at IVR attributes guard them (`'k' in attributes &&
/// ...`) or compare one (`attributes['k'] == ...`), and most calls carry none of the
/// keys, so routing can skip the evaluation (its interpreter allocates for every
/// value) for them.
///
/// Two sets are worked out, per CEL's semantics (cel 0.15's interpreter):
/// - `fails`: keys whose absence makes the expression an error;
/// - `not_true`: keys whose absence makes it false or an error.
///
/// Only these forms contribute keys; anything else (macros, conditionals, selections,
/// optional indexing, functions not listed as strict) contributes none, which is
/// always safe:
/// - `attributes['k']` fails when `k` is absent;
/// - `'k' in attributes` is false when `k` is absent;
/// - a strict operator (comparisons, arithmetic, `in`, `!`, indexing) fails when an
///   argument fails;
/// - `a && b` is not true when either is not true, and fails only when both fail
///   (`false && error` is false);
/// - `a || b` is not true only when both are not true, and fails only when both fail
///   (`true || error` is true).
fn required_attributes(e: &cel::IdedExpr) -> std::collections::BTreeSet<String> {
    keys(e).not_true
}

#[derive(Default)]
struct Keys {
    fails: std::collections::BTreeSet<String>,
    not_true: std::collections::BTreeSet<String>,
}

/// Operators and functions whose result fails whenever an argument fails.
const STRICT: &[&str] = &[
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::ADD,
    operators::SUBSTRACT,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::NEGATE,
    operators::LOGICAL_NOT,
    operators::IN,
    operators::INDEX,
];

fn keys(e: &cel::IdedExpr) -> Keys {
    let cel::common::ast::Expr::Call(call) = &e.expr else {
        return Keys::default();
    };
    let is_attributes = |a: &cel::IdedExpr| matches!(&a.expr, cel::common::ast::Expr::Ident(n) if n == "attributes");
    let literal = |a: &cel::IdedExpr| match &a.expr {
        cel::common::ast::Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_owned()),
        _ => None,
    };
    match (
        call.func_name.as_str(),
        call.target.as_deref(),
        call.args.as_slice(),
    ) {
        (operators::LOGICAL_AND, None, [a, b]) => {
            let (a, b) = (keys(a), keys(b));
            Keys {
                fails: a.fails.intersection(&b.fails).cloned().collect(),
                not_true: a.not_true.union(&b.not_true).cloned().collect(),
            }
        }
        (operators::LOGICAL_OR, None, [a, b]) => {
            let (a, b) = (keys(a), keys(b));
            Keys {
                fails: a.fails.intersection(&b.fails).cloned().collect(),
                not_true: a.not_true.intersection(&b.not_true).cloned().collect(),
            }
        }
        (f, None, args) if STRICT.contains(&f) => {
            let mut fails: std::collections::BTreeSet<String> =
                args.iter().flat_map(|a| keys(a).fails).collect();
            let mut not_true = std::collections::BTreeSet::new();
            match (f, args) {
                (operators::INDEX, [m, k]) if is_attributes(m) => fails.extend(literal(k)),
                (operators::IN, [k, m]) if is_attributes(m) => not_true.extend(literal(k)),
                _ => {}
            }
            not_true.extend(fails.iter().cloned());
            Keys { fails, not_true }
        }
        _ => Keys::default(),
    }
}

/// A CEL syntax error in words a supervisor can act on: where (column, and the text
/// just before it), what was wrong or expected, and an example of a valid expression.
/// The parser's own message is an ANTLR dump ("mismatched input '<EOF>' expecting
/// {'[', '{', '(', ..., NUM_FLOAT, IDENTIFIER}"), which names grammar tokens.
fn syntax_error(source: &str, errors: &cel::ParseErrors) -> String {
    let Some(e) = errors.errors.first() else {
        return format!("expression does not compile. {}", example(source));
    };
    let msg = e.msg.trim_start_matches("Syntax error: ");
    let (line, col) = e.pos;
    let col = usize::try_from(col).unwrap_or(0).max(1);
    let text = source
        .lines()
        .nth(usize::try_from(line - 1).unwrap_or(0))
        .unwrap_or(source);
    // The text before the problem: up to 30 characters.
    let before: String = text.chars().take(col - 1).collect();
    let tail: String = {
        let chars: Vec<char> = before.trim_end().chars().collect();
        let from = chars.len().saturating_sub(30);
        chars[from..].iter().collect()
    };
    let at_end = text.chars().skip(col - 1).all(char::is_whitespace)
        || msg.contains("'<EOF>'")
        || msg.starts_with("missing") && msg.ends_with("at '<EOF>'");
    let place = match (line, at_end, tail.is_empty()) {
        (1, true, _) => "at the end of the expression".to_owned(),
        (1, false, true) => format!("at column {col}"),
        (1, false, false) => format!("at column {col}, after `{tail}`"),
        (l, _, _) => format!("on line {l}, column {col}"),
    };
    let what = explain(msg, at_end);
    format!(
        "expression does not compile {place}: {what}. {}",
        example(source)
    )
}

/// The parser's message, reworded.
fn explain(msg: &str, at_end: bool) -> String {
    let quoted = |rest: &str| -> String {
        // "'X' expecting ..." or "'X'": the text between the first and the last quote
        // before " expecting".
        let head = rest.split(" expecting").next().unwrap_or(rest).trim();
        head.strip_prefix('\'')
            .and_then(|h| h.strip_suffix('\''))
            .unwrap_or(head)
            .to_owned()
    };
    let expected = msg
        .split_once(" expecting ")
        .map(|(_, e)| expectation(e))
        .unwrap_or_default();
    if let Some(rest) = msg.strip_prefix("token recognition error at: ") {
        let token = quoted(rest);
        let token = token.trim();
        return if token.starts_with('=') {
            "'=' alone is not an operator: compare with == (or != for not equal)".into()
        } else if token.starts_with('\'') || token.starts_with('"') {
            "a quote is not closed: put text between quotes, 'like this'".into()
        } else {
            format!("'{token}' is not allowed in an expression")
        };
    }
    for prefix in [
        "mismatched input ",
        "extraneous input ",
        "no viable alternative at input ",
    ] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let token = quoted(rest);
            if matches!(token.to_ascii_lowercase().as_str(), "and" | "or" | "not") {
                return format!(
                    "'{token}' is not a CEL operator: combine conditions with && (and), || (or), and negate with !"
                );
            }
            if token == "<EOF>" || at_end {
                return if expected.is_empty() {
                    "the expression ends too early".into()
                } else {
                    format!("the expression ends too early: {expected} was expected")
                };
            }
            if msg.ends_with("expecting <EOF>") {
                return format!(
                    "unexpected '{token}' after a complete condition (an extra bracket or quote, or a missing && or ||?)"
                );
            }
            return if expected.is_empty() {
                format!("unexpected '{token}'")
            } else {
                format!("unexpected '{token}'; {expected} was expected")
            };
        }
    }
    if let Some(rest) = msg.strip_prefix("missing ") {
        let (token, at) = rest.split_once(" at ").unwrap_or((rest, ""));
        return if at == "'<EOF>'" || at_end {
            format!("a closing {token} is missing")
        } else {
            format!("{token} is missing before {at}")
        };
    }
    msg.to_owned()
}

/// A parser expectation set (`{']', ','}` or `<EOF>`) in words.
fn expectation(set: &str) -> String {
    let tokens: Vec<&str> = set
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .map(str::trim)
        .collect();
    if tokens
        .iter()
        .any(|t| matches!(*t, "IDENTIFIER" | "STRING" | "NUM_INT"))
    {
        return "a value (a variable such as country, 'text' in quotes, or a number)".into();
    }
    let words: Vec<String> = tokens
        .iter()
        .map(|t| match *t {
            "<EOF>" => "the end".to_owned(),
            t => t.to_owned(),
        })
        .collect();
    match words.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// An example close to what the expression seems to try.
fn example(source: &str) -> &'static str {
    if source.contains("attributes") {
        "Example: 'vip' in attributes && attributes['vip'] == 'yes'"
    } else if source.contains(" in ") || source.contains('[') {
        "Example: country in ['US', 'CA'] && intent == 'billing'"
    } else if source.contains('(') {
        "Example: caller.startsWith('+1212') && local_hour >= 8"
    } else {
        "Example: country == 'US' && local_hour >= 8"
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

    /// Each syntax error says where, what was wrong or expected, and gives an example,
    /// in words: no grammar token names (IDENTIFIER, NUM_FLOAT, <EOF>) reach a
    /// supervisor.
    #[test]
    fn syntax_errors_say_where_what_and_give_an_example() {
        let cases = [
            ("country ==", "at the end of the expression: the expression ends too early: a value (a variable such as country, 'text' in quotes, or a number) was expected"),
            ("country = 'US'", "at column 9, after `country`: '=' alone is not an operator: compare with =="),
            ("country == 'US' and intent == 'x'", "at column 17, after `country == 'US'`: 'and' is not a CEL operator: combine conditions with && (and)"),
            ("country == US'", "at column 14, after `country == US`: a quote is not closed"),
            ("attributes['vip' == 'yes'", "at the end of the expression: a closing ']' is missing"),
            ("country == 'US')", "at column 16, after `country == 'US'`: unexpected ')' after a complete condition"),
            ("country in ['US', 'CA'", "at the end of the expression: the expression ends too early: ']' or ',' was expected"),
            ("caller.startsWith(+1212)", "at column 19, after `caller.startsWith(`: unexpected '+'; a value"),
        ];
        for (source, want) in cases {
            let err = Expr::compile(source).unwrap_err();
            assert!(err.starts_with("expression does not compile "), "{err}");
            assert!(err.contains(want), "{source}: {err}");
            assert!(err.contains("Example: "), "{err}");
            for raw in [
                "IDENTIFIER",
                "NUM_FLOAT",
                "<EOF>",
                "<input>",
                "Syntax error",
                "\n",
            ] {
                assert!(!err.contains(raw), "{source}: {err}");
            }
            // The example given compiles.
            let example = err.split("Example: ").nth(1).unwrap();
            Expr::compile(example).unwrap();
        }
    }

    #[test]
    fn refuses_bad_expressions() {
        assert!(Expr::compile("country ==").is_err());
        assert!(Expr::compile("unknown_var == 'x'").is_err());
        assert!(Expr::compile("").is_err());
        assert!(Expr::compile(&"(".repeat(100)).is_err());
        assert!(Expr::compile(&format!("country == '{}'", "x".repeat(2000))).is_err());
    }

    fn required(source: &str) -> Vec<String> {
        Expr::compile(source).unwrap().required
    }

    #[test]
    fn required_attributes_follow_the_boolean_structure() {
        let fraud = "'fraud_flag' in attributes && attributes['fraud_flag'] == 'yes'";
        assert_eq!(required(fraud), ["fraud_flag"]);
        assert_eq!(required("attributes['a'] == 'x'"), ["a"]);
        assert_eq!(
            required("'a' in attributes && 'b' in attributes"),
            ["a", "b"]
        );
        assert_eq!(
            required("('a' in attributes && 'b' in attributes) || 'a' in attributes"),
            ["a"]
        );
        // Each of these can be true without the key.
        for free in [
            "'a' in attributes || 'b' in attributes",
            "!('a' in attributes)",
            "attributes['a'] == 'x' || true",
            "has(attributes.a)",
            "'a' in attributes ? true : country == 'US'",
            "country == 'US'",
        ] {
            assert!(required(free).is_empty(), "{free}");
        }
        // A failing key inside a negation still fails it.
        assert_eq!(required("!(attributes['a'] == 'x')"), ["a"]);
    }

    #[test]
    fn a_missing_required_attribute_skips_evaluation() {
        let e = Expr::compile("'vip' in attributes && attributes['vip'] == 'yes'").unwrap();
        let mut attrs = BTreeMap::new();
        assert_eq!(e.missing_attribute(&attrs), Some("vip"));
        attrs.insert("vip".to_string(), "yes".to_string());
        assert_eq!(e.missing_attribute(&attrs), None);
        assert_eq!(e.eval(&vars(&attrs)), Ok(true));
    }

    /// Expressions over the attributes `a` and `b` (and one fact), nested up to three
    /// levels with `&&`, `||`, `!` and conditionals.
    fn expression() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![Just("a"), Just("b")];
        let leaf = prop_oneof![
            key.clone().prop_map(|k| format!("'{k}' in attributes")),
            key.clone()
                .prop_map(|k| format!("attributes['{k}'] == 'yes'")),
            key.clone()
                .prop_map(|k| format!("attributes['{k}'] != 'yes'")),
            key.clone().prop_map(|k| format!("has(attributes.{k})")),
            key.clone()
                .prop_map(|k| format!("attributes['{k}'].startsWith('y')")),
            key.prop_map(|k| format!("size(attributes['{k}']) > 1")),
            Just("country == 'US'".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} && {y})")),
                (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} || {y})")),
                inner.clone().prop_map(|x| format!("!({x})")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(c, x, y)| format!("({c} ? {x} : {y})")),
            ]
        })
    }

    proptest::proptest! {
        /// Skipping is sound: whenever a required attribute is missing, evaluating
        /// the expression would not have given true either.
        #[test]
        fn a_skipped_expression_could_not_have_matched(
            source in expression(),
            a in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("yes"),
                proptest::strategy::Just("no"),
            ]),
            b in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("yes"),
                proptest::strategy::Just("no"),
            ]),
        ) {
            let e = Expr::compile(&source).unwrap();
            let mut attrs = BTreeMap::new();
            for (k, v) in [("a", a), ("b", b)] {
                if let Some(v) = v {
                    attrs.insert(k.to_string(), v.to_string());
                }
            }
            if let Some(k) = e.missing_attribute(&attrs) {
                proptest::prop_assert_ne!(e.eval(&vars(&attrs)), Ok(true), "{} lacks {}", source, k);
            }
        }
    }

    #[test]
    fn non_bool_result_does_not_match() {
        let attrs = BTreeMap::new();
        let e = Expr::compile("local_hour + 1").unwrap();
        assert!(e.eval(&vars(&attrs)).is_err());
    }
}
