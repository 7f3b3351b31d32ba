//! `Topic`: publish/subscribe fan-out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Filter, Transform};

/// A publish endpoint whose events are delivered to every matching subscription.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "hookstream.io",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "htopic",
    category = "hookstream",
    printcolumn(name = "URL", type_ = "string", json_path = ".status.publishUrl"),
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
pub struct TopicSpec {
    /// What the topic carries, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Destinations that receive the published events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub subscriptions: Vec<Subscription>,
}

/// One subscriber of a Topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Name of the Destination, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub destination: String,
    /// Conditions an event must all satisfy to be delivered to this subscriber.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub filters: Vec<Filter>,
    /// Reshapes the payload for this subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
}

/// Observed state of a Topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
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
    /// The URL publishers post events to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_url: Option<String>,
}
