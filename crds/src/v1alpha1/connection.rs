//! `Connection`: a route from a Source to a Destination.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Filter, Transform};

/// Routes events of a Source to a Destination, optionally filtered and transformed. Several
/// Connections may share a Source (fan-out) or a Destination.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hookstream.io",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    status = "ConnectionStatus",
    shortname = "hconn",
    category = "hookstream",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source"),
    printcolumn(
        name = "Destination",
        type_ = "string",
        json_path = ".spec.destination"
    ),
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
pub struct ConnectionSpec {
    /// Name of the Source, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub source: String,
    /// Name of the Destination, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub destination: String,
    /// Conditions an event must all satisfy to be routed here. Empty routes every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub filters: Vec<Filter>,
    /// Reshapes the payload before delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    /// When true, no new events are routed through this Connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// Observed state of a Connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation the gateway serves: this one when it is valid, the last valid one
    /// while an edit is broken (`Ready` then stays `True` with reason
    /// `LastValidGeneration`), absent when no version is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Ready`, with reasons such as `SourceNotFound`,
    /// `DestinationNotFound`, `InvalidFilter` or `InvalidTransform`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::v1alpha1::common::conditions")]
    pub conditions: Vec<Condition>,
}
