//! `AlertRule`: a condition on delivery health that notifies channels.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// Notifies channels when delivery health crosses a threshold.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hookstream.io",
    version = "v1alpha1",
    kind = "AlertRule",
    namespaced,
    status = "AlertRuleStatus",
    shortname = "halert",
    category = "hookstream",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Threshold", type_ = "number", json_path = ".spec.threshold"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// `failure-rate` (share of failed attempts, 0 to 1), `latency` (p95 milliseconds),
    /// `volume-drop` (share of the previous window's volume lost, 0 to 1), `dlq` (dead-lettered
    /// deliveries in the window) or `issue-opened`.
    #[serde(rename = "type")]
    pub type_: AlertRuleType,
    /// The value that triggers the alert; its unit depends on `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Window the metric is computed over, like `5m`. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Limit the rule to one Source (name in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Limit the rule to one Destination (name in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<AlertChannel>,
    /// Least time between two notifications of this rule, like `60m`. Default `60m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
}

/// Kinds of alert rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AlertRuleType {
    /// Share of failed delivery attempts.
    FailureRate,
    /// Delivery latency.
    Latency,
    /// Drop in event volume.
    VolumeDrop,
    /// Dead-lettered deliveries.
    Dlq,
    /// A new issue was opened.
    IssueOpened,
}

/// A notification channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertChannel {
    /// A webhook that receives the alert as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,
}

/// A webhook notification channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// URL that receives the alert.
    pub url: String,
    /// Optional HMAC-SHA256 signing secret for the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// Observed state of an AlertRule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation the gateway serves: this one when it is valid, the last valid one
    /// while an edit is broken (`Ready` then stays `True` with reason
    /// `LastValidGeneration`), absent when no version is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Ready`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::v1alpha1::common::conditions")]
    pub conditions: Vec<Condition>,
    /// When the rule last notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_triggered_at: Option<Time>,
}
