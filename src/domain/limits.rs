//! Named bounds on everything that comes from outside. Requests beyond them are refused
//! with INVALID_ARGUMENT, never truncated.

/// Longest identifier (call id, customer id, queue id, rule id, ...), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest short label (status, intent, language, tracking code, region), in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest free text (customer notes, campaign script, rule note), in bytes.
pub const MAX_TEXT_LEN: usize = 4096;
/// Most attributes on one call.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 256;
/// Most phone numbers on one customer.
pub const MAX_CUSTOMER_PHONES: usize = 16;
/// Largest plan document, in bytes.
pub const MAX_PLAN_BYTES: usize = 4 * 1024 * 1024;
/// Most rules in a plan.
pub const MAX_RULES: usize = 10_000;
/// Most queues in a plan.
pub const MAX_QUEUES: usize = 1_000;
/// Most campaigns in a plan.
pub const MAX_CAMPAIGNS: usize = 1_000;
/// Most entries in the location prefix table.
pub const MAX_LOCATION_PREFIXES: usize = 100_000;
/// Most values in one rule matcher list.
pub const MAX_MATCHER_VALUES: usize = 1_000;
/// Longest CEL expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 1_024;
/// Deepest nesting of brackets in a CEL expression (guards the parser's stack).
pub const MAX_EXPRESSION_DEPTH: usize = 32;
/// Most skills on one agent.
pub const MAX_AGENT_SKILLS: usize = 64;
