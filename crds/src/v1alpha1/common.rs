//! Types shared by several kinds: Secret references, filters, transforms and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the spec is valid.
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// Condition type: every object the spec refers to exists.
pub const CONDITION_RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type: the object is programmed into the gateway.
pub const CONDITION_READY: &str = "Ready";

/// A key of a Secret in the same namespace as the object that refers to it.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace of the referring object.
    pub name: String,
    /// Key inside the Secret's `data` (or `stringData`) whose value is used.
    pub key: String,
}

/// A comparison that an event must satisfy to be routed. All filters of a list must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.field.matches('^(body|payload)([.][^.]+)*$') || self.field.matches('^(headers|query)([.][^.]+)+$') || self.field in ['method', 'content_type', 'source_ip']",
    "message": "filter field must start with body., payload., headers. or query., or be method, content_type or source_ip"
}]))]
pub struct Filter {
    /// Dot-notation path of the value to test. Roots: `body.` (alias `payload.`) for the parsed
    /// JSON body, `headers.` (case-insensitive names), `query.`, and the plain fields `method`,
    /// `content_type` and `source_ip`. Example: `body.data.object.status`.
    #[schemars(length(min = 1, max = 256))]
    pub field: String,
    /// Operator: `eq`, `neq`, `contains` (substring of a string), `gt`, `gte`, `lt`, `lte`
    /// (numbers), `exists` (value `true` or `false`), `in` (value is a list). A missing field
    /// matches only `exists: false` and `neq`.
    pub op: FilterOp,
    /// Value to compare against: any JSON value; a list for `in`, a boolean for `exists`
    /// (default `true`), a number for `gt`/`gte`/`lt`/`lte`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::v1alpha1::common::any_json")]
    pub value: Option<serde_json::Value>,
}

/// The nine filter operators.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FilterOp {
    /// Equal (strings, numbers, booleans, null).
    Eq,
    /// Not equal; also true when the field is missing.
    Neq,
    /// The field is a string containing the value as a substring.
    Contains,
    /// Numerically greater than.
    Gt,
    /// Numerically greater than or equal.
    Gte,
    /// Numerically less than.
    Lt,
    /// Numerically less than or equal.
    Lte,
    /// The field is present and not null (`value: true`, the default) or absent/null (`false`).
    Exists,
    /// The field equals one of the listed values.
    In,
}

impl FilterOp {
    /// The operator as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Eq => "eq",
            FilterOp::Neq => "neq",
            FilterOp::Contains => "contains",
            FilterOp::Gt => "gt",
            FilterOp::Gte => "gte",
            FilterOp::Lt => "lt",
            FilterOp::Lte => "lte",
            FilterOp::Exists => "exists",
            FilterOp::In => "in",
        }
    }
}

/// A payload transform applied before delivery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Transform {
    /// A JSONata expression evaluated against the event body (parsed JSON). `$headers`,
    /// `$query`, `$method` and `$event` (the whole stored event) are bound. Its result is sent
    /// as JSON. A failing expression, or one that yields nothing, is a failed delivery attempt
    /// that records the JSONata error.
    #[schemars(length(min = 1))]
    pub jsonata: String,
}

/// Schema for a field that holds any JSON value.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema for a field that holds any JSON object.
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema for `status.conditions`: a list-map keyed by `type`, as Kubernetes conventions ask.
pub(crate) fn conditions(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".to_owned(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".to_owned(),
        serde_json::json!(["type"]),
    );
    schema
}

/// Sets `new` in `conditions`, replacing the condition of the same type. The transition time
/// is kept unless the status flips, so that rewriting an unchanged condition is a no-op.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if existing.status == new.status {
            new.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = new;
    } else {
        conditions.push(new);
    }
}

/// A condition with the given fields, stamped with `now` as its transition time.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now,
    }
}
