//! `/v1/sources/templates` and `/v1/destinations/templates`: every provider template, with
//! what it sets in manifest terms.

use axum::Json;
use hookstream_common::api::{
    DestinationTemplate, DestinationTemplates, SourceTemplate, SourceTemplateSets, SourceTemplates,
};
use hookstream_crds::templates::{
    Credential, DestinationPreset, SourcePreset, VerificationPreset, DESTINATION_PRESETS,
    SOURCE_PRESETS,
};
use serde_json::{json, Value};

pub(super) async fn destinations() -> Json<DestinationTemplates> {
    Json(DestinationTemplates {
        templates: DESTINATION_PRESETS.iter().map(destination).collect(),
    })
}

fn destination(p: &DestinationPreset) -> DestinationTemplate {
    let credential = match p.credential {
        Credential::None => Value::Null,
        Credential::Header(name) => json!({ "header": name }),
        Credential::Binding => json!({ "binding": "$credential" }),
    };
    DestinationTemplate {
        id: p.id.as_str().to_owned(),
        name: p.name.to_owned(),
        kind: "http".to_owned(),
        description: p.description.to_owned(),
        docs_url: p.docs_url.to_owned(),
        config_template: json!({ "url": p.default_url.unwrap_or_default() }),
        sets: json!({
            "http": { "url": p.default_url },
            "credentials": credential,
            "transform": p.transform,
        }),
    }
}

pub(super) async fn sources() -> Json<SourceTemplates> {
    Json(SourceTemplates {
        templates: SOURCE_PRESETS.iter().map(source).collect(),
    })
}

fn verification_sets(v: &VerificationPreset) -> Value {
    let scheme = serde_json::to_value(v.scheme).unwrap_or(Value::Null);
    let mut sets = json!({ "type": scheme, "header": v.header });
    if let Some(encoding) = v.encoding {
        sets["encoding"] = serde_json::to_value(encoding).unwrap_or(Value::Null);
    }
    if let Some(prefix) = v.prefix {
        sets["prefix"] = json!(prefix);
    }
    if let Some(seconds) = v.tolerance_seconds {
        sets["tolerance"] = json!(format!("{seconds}s"));
    }
    sets
}

fn source(p: &SourcePreset) -> SourceTemplate {
    let verification = p.verification.as_ref().map(verification_sets);
    let dedup = p.dedup.map(|(strategy, field)| {
        let mut sets = json!({ "strategy": strategy });
        if let Some(field) = field {
            sets["field"] = json!(field);
        }
        sets
    });
    SourceTemplate {
        id: p.id.as_str().to_owned(),
        name: p.name.to_owned(),
        description: p.description.to_owned(),
        verification_type: verification
            .as_ref()
            .and_then(|v| v["type"].as_str())
            .map(|t| t.replace('-', "_")),
        docs_url: p.docs_url.map(str::to_owned),
        sets: SourceTemplateSets {
            verification,
            dedup,
        },
    }
}
