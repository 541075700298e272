//! The OpenAPI 3.1 document of the server, generated from the code: each handler carries its
//! `#[utoipa::path]` (method, path, parameters, body, every status it answers), the types it reads
//! and writes derive their schemas, and [`document`] gathers them. `GET /api/v1/openapi.json`
//! serves it (to any token: it says what the routes are, which a stranger is not told).
//!
//! What broker-core serialises (kinds, targets, records) has no schema derive there — broker-core
//! knows nothing of HTTP —, so [`schemas`] describes it here; the schemathesis test checks the
//! answers of the running server against those descriptions.

pub mod schemas;

use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "broker serve",
        description = "broker's REST API: Razor-compatible handoff-target routes (`/broker`) and the \
                       native API under `/api/v1`. Every route but `GET /health` needs \
                       `Authorization: Bearer TOKEN` (`broker serve token add`); errors of the \
                       native API are RFC 7807 problem documents. See docs/serve.md.",
    ),
    paths(
        crate::api::health,
        crate::api::tokens,
        openapi,
        crate::api::targets::kinds,
        crate::api::targets::kind,
        crate::api::targets::list,
        crate::api::targets::show,
        crate::api::targets::create,
        crate::api::targets::change,
        crate::api::targets::remove,
        crate::api::hosts::list,
        crate::api::hosts::show,
        crate::api::hosts::checkin,
        crate::api::hosts::extend,
        crate::api::hosts::handoff_status,
        crate::api::hosts::handoff_run,
        crate::api::providers::list,
        crate::api::providers::query,
        crate::api::checkouts::start,
        crate::api::checkouts::operations,
        crate::api::checkouts::operation,
        crate::razor::list,
        crate::razor::show,
        crate::razor::plugins,
        crate::razor::add,
        crate::razor::update,
        crate::razor::remove,
        crate::razor::remove_all,
    ),
    components(responses(
        schemas::BadRequest,
        schemas::Unauthorized,
        schemas::Forbidden,
        schemas::RequestTimeout,
        schemas::TooLarge,
        schemas::ServerError,
        schemas::BadGateway,
        schemas::Unavailable,
        schemas::GatewayTimeout,
    )),
    modifiers(&Bearer, &Kinds),
    security(("bearer" = [])),
    tags(
        (name = "kinds", description = "Handoff kinds: what a target can be"),
        (name = "targets", description = "Handoff targets (admin tokens change them)"),
        (name = "hosts", description = "The inventory's hosts"),
        (name = "checkouts", description = "Checkouts run as operations"),
        (name = "providers", description = "Providers and their discovery queries"),
        (name = "razor", description = "Razor's broker routes, with Razor's envelope"),
        (name = "server", description = "Health, tokens and this document"),
    ),
)]
struct ApiDoc;

/// The `bearer` security scheme every route but `/health` names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "a token of `broker serve token add NAME --role read|write|admin`",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The handoff kinds this server has, as the only values of a new target's `kind` (and of Razor's
/// `plugin`): the kinds compiled in, which the macros cannot know.
struct Kinds;

impl Modify for Kinds {
    fn modify(&self, openapi: &mut Document) {
        let names: Vec<serde_json::Value> = broker_core::handoff::schema::builtin()
            .iter()
            .map(|k| k.name.into())
            .collect();
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (schema, property) in [("NewTarget", "kind"), ("RazorInput", "plugin")] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property)
            {
                field.enum_values = Some(names.clone());
            }
        }
    }
}

/// The OpenAPI 3.1 document of every route.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "server",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", body = Object),
        (status = 401, response = schemas::Unauthorized),
    ),
)]
pub(crate) async fn openapi() -> Response {
    match document().to_json() {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Err(e) => Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("the OpenAPI document cannot be written: {e}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// The methods and paths the router answers, read from its `Debug` form (axum lists no routes
    /// otherwise): each route id's path, and the methods its `MethodRouter` has a handler for.
    fn routed() -> BTreeSet<(String, String)> {
        let text = format!("{:?}", crate::api::routes());
        // Only the router of paths: its fallback router lists the fallback's catch-all.
        let text = text.split("fallback_router:").next().unwrap_or_default();
        let mut paths = std::collections::BTreeMap::new();
        let (routes, node) = text.split_once("node: Node").expect("the router's node");
        for entry in node.split("RouteId(").skip(1) {
            let (id, rest) = entry.split_once(')').expect("a route id");
            let path = rest.split('"').nth(1).expect("a quoted path");
            paths.insert(id.to_owned(), path.to_owned());
        }
        let mut found = BTreeSet::new();
        for entry in routes.split("RouteId(").skip(1) {
            let (id, rest) = entry.split_once(')').expect("a route id");
            let fields = rest
                .split_once("MethodRouter {")
                .and_then(|(_, r)| r.split_once(", fallback:"))
                .expect("a method router")
                .0;
            for field in fields.split(", ") {
                let (method, handler) = field.trim().split_once(": ").expect("method: handler");
                if handler != "None" {
                    found.insert((method.to_owned(), paths[id].clone()));
                }
            }
        }
        found
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                found.insert((method.clone(), path.clone()));
            }
        }
        found
    }

    fn json() -> Value {
        serde_json::from_str(&document().to_json().expect("the document as JSON")).expect("JSON")
    }

    #[test]
    fn the_document_lists_every_route_the_router_has_and_no_other() {
        let routed = routed();
        assert!(
            routed.len() > 20,
            "the router's routes were not read: {routed:?}"
        );
        let documented = documented(&json());
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes without a #[utoipa::path] in openapi.rs: {undocumented:?}; documented but not \
             routed: {unrouted:?}"
        );
    }

    /// Every `$ref` of `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operations_resolvable_refs_and_declared_parameters()
    {
        let doc = json();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "broker serve");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"],
            serde_json::json!({"type": "http", "scheme": "bearer",
                "description": "a token of `broker serve token add NAME --role read|write|admin`"})
        );
        assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in &all {
            let pointer = r.strip_prefix('#').expect("a local $ref");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().expect("an operationId");
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let templated: BTreeSet<&str> = path
                    .split('{')
                    .skip(1)
                    .filter_map(|s| s.split('}').next())
                    .collect();
                assert_eq!(declared, templated, "{method} {path}: path parameters");
                let responses = op["responses"].as_object().expect("responses");
                if path == crate::auth::HEALTH {
                    assert_eq!(
                        op["security"],
                        serde_json::json!([{}]),
                        "{path} needs no token"
                    );
                } else {
                    assert!(responses.contains_key("401"), "{method} {path} has no 401");
                }
            }
        }
    }

    #[test]
    fn problems_are_documented_as_problem_json_and_statuses_as_the_code_gives_them() {
        let doc = json();
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        let create = op("/api/v1/targets", "post");
        let statuses: Vec<&str> = create["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            statuses,
            [
                "200", "201", "400", "401", "403", "408", "409", "413", "422", "500"
            ]
        );
        assert_eq!(
            create["responses"]["409"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert_eq!(
            doc["components"]["responses"]["Unauthorized"]["content"]["application/problem+json"]["schema"]
                ["$ref"],
            "#/components/schemas/Problem"
        );
        let problem = &doc["components"]["schemas"]["Problem"];
        assert_eq!(
            problem["required"],
            serde_json::json!(["type", "title", "status", "detail"])
        );
        // Razor's routes answer in Razor's words, never as problems (but for a refused token).
        let remove_all = op("/broker", "delete");
        assert_eq!(
            remove_all["responses"]["405"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RazorError"
        );
        // A new target's kind is one of the kinds compiled in.
        let kinds: Vec<&str> = broker_core::handoff::schema::builtin()
            .iter()
            .map(|k| k.name)
            .collect();
        assert!(kinds.contains(&"noop"), "{kinds:?}");
        for (schema, property) in [("NewTarget", "kind"), ("RazorInput", "plugin")] {
            assert_eq!(
                doc["components"]["schemas"][schema]["properties"][property]["enum"],
                serde_json::json!(kinds),
                "{schema}.{property}"
            );
        }
        // The count of a checkout is bounded as the code bounds it.
        assert_eq!(
            doc["components"]["schemas"]["Checkout"]["properties"]["count"]["maximum"],
            crate::api::checkouts::MAX_COUNT
        );
        // Secrets are described as fingerprints.
        let target = &doc["components"]["schemas"]["Target"];
        assert!(
            target["properties"]["config"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("secret sha256:")),
            "{target}"
        );
    }
}
