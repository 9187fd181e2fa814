//! The OpenAPI 3.1 document, generated from the handlers, and its Swagger UI.

use axum::{
    http::{HeaderValue, Method, header},
    response::IntoResponse,
};
use bytes::Bytes;

use crate::layers::Secured;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, Response, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{problem, processing, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Atelier API",
        description = "Run fal.ai models on your images: accounts, uploads, workflows, jobs and live events. \
Errors are RFC 9457 problem documents (`application/problem+json`).",
    ),
    components(schemas(
        problem::Problem, problem::ProblemField, problem::ProblemQuota, problem::ProblemBudget, users::SettingsBody,
        // Used by parameters only, which do not collect their schemas.
        processing::StatusInclude,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "images", description = "Your uploaded and result images"),
        (name = "shares", description = "Public links to your images: create, list, revoke, and the page anyone with a link sees"),
        (name = "workflows", description = "What can be done to an image, and its parameters"),
        (name = "processing", description = "Jobs: start, watch live, cancel, list"),
        (name = "users", description = "Your profile, settings, history, usage and account"),
        (name = "keys", description = "API keys for programs, limited to scopes"),
        (name = "admin", description = "For administrators: the platform's audit log, the workflow catalogue, users, the queue and fal"),
        (name = "webhooks", description = "Your outgoing webhooks: endpoints, signing secrets (Standard Webhooks) and the delivery log"),
        (name = "pipelines", description = "Pipelines: workflows chained, each step's result the next one's input; saved, validated, run on one image or many, watched live, retried from the failed step"),
    ),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A session's access token (a JWT from `/api/auth/login`), or an API \
key (`atl_live_...`, from `POST /api/keys`). An access token may do everything its user \
may; an API key only what its scopes allow: each operation lists the scopes it needs in \
its security requirement, and refuses a key without them with 403 \
(`https://atelier.dev/problems/insufficient-scope`). Operations for administrators list \
none: no API key may call them.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document: [`ApiDoc`], every route's operation, and the responses
/// every operation may give whatever it does.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, document) = crate::rest(0).split_for_parts();
    with_common_responses(document)
}

/// The scopes an API key needs for each secured operation, by operation id: the
/// scopes of the gRPC methods the operation calls (see
/// `atelier.access.v1.MethodAccess.scope`). Operations for administrators are
/// absent: no key may call them.
pub const SCOPES: &[(&str, &[&str])] = &[
    ("logout_all", &["account:write"]),
    ("get_current_user", &["account:read"]),
    ("change_password", &["account:write"]),
    ("list_images", &["images:read"]),
    ("get_image", &["images:read"]),
    ("upload_image", &["images:write"]),
    ("upload_image_body", &["images:write"]),
    ("delete_image", &["images:write"]),
    ("start_job", &["processing:write"]),
    ("cancel_job", &["processing:write"]),
    ("retry_job", &["processing:write"]),
    ("get_job_status", &["processing:read"]),
    ("list_jobs", &["processing:read"]),
    ("stream_job_events", &["processing:read"]),
    ("download_job", &["processing:read", "images:read"]),
    ("start_batch", &["processing:write"]),
    ("get_batch", &["processing:read"]),
    ("cancel_batch", &["processing:write"]),
    ("retry_batch", &["processing:write"]),
    ("download_batch", &["processing:read", "images:read"]),
    ("estimate_cost", &["images:read"]),
    ("get_history", &["processing:read"]),
    ("get_profile", &["account:read"]),
    ("update_profile", &["account:write"]),
    ("get_settings", &["account:read"]),
    ("get_my_spend", &["account:read"]),
    ("replace_settings", &["account:write"]),
    ("delete_account", &["account:write"]),
    ("create_api_key", &["keys:write"]),
    ("list_api_keys", &["keys:read"]),
    ("revoke_api_key", &["keys:write"]),
    ("create_webhook", &["webhooks:write"]),
    ("list_webhooks", &["webhooks:read"]),
    ("get_webhook", &["webhooks:read"]),
    ("update_webhook", &["webhooks:write"]),
    ("delete_webhook", &["webhooks:write"]),
    ("rotate_webhook_secret", &["webhooks:write"]),
    ("list_webhook_deliveries", &["webhooks:read"]),
    ("redeliver_webhook", &["webhooks:write"]),
    ("test_webhook", &["webhooks:write"]),
    ("create_pipeline", &["processing:write"]),
    ("list_pipelines", &["processing:read"]),
    ("get_pipeline", &["processing:read"]),
    ("update_pipeline", &["processing:write"]),
    ("delete_pipeline", &["processing:write"]),
    ("validate_pipeline", &["processing:read"]),
    ("start_pipeline_run", &["processing:write"]),
    ("list_pipeline_runs", &["processing:read"]),
    ("get_pipeline_run", &["processing:read"]),
    ("cancel_pipeline_run", &["processing:write"]),
    ("retry_pipeline_run", &["processing:write"]),
    ("stream_pipeline_run_events", &["processing:read"]),
    ("create_share_link", &["shares:write"]),
    ("list_share_links", &["shares:read"]),
    ("revoke_share_link", &["shares:write"]),
];

/// The scopes `operation_id` needs of an API key; `None` when no key may call it.
pub fn scopes_of(operation_id: &str) -> Option<&'static [&'static str]> {
    SCOPES
        .iter()
        .find(|(id, _)| *id == operation_id)
        .map(|(_, scopes)| *scopes)
}

/// The answers any operation may give besides its own: a malformed request, a
/// missing or expired token, a rate limit, a service away. Added where the
/// operation does not describe them itself. Secured operations name the scopes
/// an API key needs in their security requirement.
fn with_common_responses(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let secured = operation
                .security
                .as_ref()
                .is_some_and(|requirements| !requirements.is_empty());
            let json_body = operation
                .request_body
                .as_ref()
                .is_some_and(|body| body.content.contains_key("application/json"));
            let mut common = vec![
                (
                    "400",
                    "The request is malformed (a parameter of the wrong type, a body that is not JSON)",
                ),
                (
                    "429",
                    "Too many requests from you or your address; retry after `Retry-After` seconds",
                ),
                ("503", "A service is unavailable; try again shortly"),
            ];
            if secured {
                common.push((
                    "401",
                    "Not signed in, or the access token or API key expired or was revoked",
                ));
                common.push((
                    "403",
                    "An API key without the scopes this operation needs (`insufficient-scope`)",
                ));
                let scopes = operation
                    .operation_id
                    .as_deref()
                    .and_then(scopes_of)
                    .unwrap_or_default();
                operation.security =
                    Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        scopes.iter().copied(),
                    )]);
            }
            if operation.request_body.is_some() {
                common.push(("413", "The body is over the size limit"));
            }
            let in_path = operation.parameters.iter().flatten().any(|parameter| {
                parameter.parameter_in == utoipa::openapi::path::ParameterIn::Path
            });
            if in_path {
                common.push(("404", "No such resource of yours"));
            }
            let in_query = operation.parameters.iter().flatten().any(|parameter| {
                parameter.parameter_in == utoipa::openapi::path::ParameterIn::Query
            });
            if in_query {
                common.push(("422", "A query parameter is invalid (each named)"));
            }
            if json_body {
                common.push(("415", "The body is not `application/json`"));
                common.push((
                    "422",
                    "The body is not of the expected shape (each wrong field named)",
                ));
            }
            for (status, description) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem_response(description).into());
            }
        }
    }
    document
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            problem::CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The operations that need a signed-in caller, by path: those whose
/// document names a security requirement, with the scopes an API key needs. The
/// gateway refuses them without a valid access token or API key, or with a key
/// lacking a scope, before reading anything else of the request.
pub fn secured(document: &utoipa::openapi::OpenApi) -> Secured {
    let mut secured = Secured::new();
    for (path, item) in &document.paths.paths {
        for (method, operation) in [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ] {
            if let Some(operation) = operation.as_ref().filter(|operation| {
                operation
                    .security
                    .as_ref()
                    .is_some_and(|requirements| !requirements.is_empty())
            }) {
                let scopes = operation.operation_id.as_deref().and_then(scopes_of);
                secured
                    .entry(path.clone())
                    .or_default()
                    .push((method, scopes));
            }
        }
    }
    secured
}

/// The document as served: serialized once.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(document: utoipa::openapi::OpenApi) -> Self {
        let document = with_common_responses(document);
        Self(Bytes::from(
            serde_json::to_vec(&document).unwrap_or_default(),
        ))
    }
}

impl IntoResponse for Document {
    fn into_response(self) -> axum::response::Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secured_operation_but_the_administrators_names_known_scopes() {
        let document = document();
        let mut seen = Vec::new();
        for (path, item) in &document.paths.paths {
            for operation in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                let Some(requirements) = operation.security.as_ref() else {
                    continue;
                };
                let id = operation.operation_id.clone().unwrap_or_default();
                let admin = operation
                    .tags
                    .as_ref()
                    .is_some_and(|tags| tags.iter().any(|tag| tag == "admin"));
                let scopes = scopes_of(&id);
                assert_eq!(
                    scopes.is_none(),
                    admin,
                    "{path} ({id}): every secured operation but the administrators' needs scopes"
                );
                let json = serde_json::to_value(requirements).expect("json");
                let listed: Vec<String> =
                    serde_json::from_value(json[0]["bearer"].clone()).expect("scopes");
                assert_eq!(
                    listed,
                    scopes.unwrap_or_default(),
                    "{path} ({id}) lists its scopes"
                );
                seen.push(id);
            }
        }
        for (id, scopes) in SCOPES {
            assert!(seen.iter().any(|seen| seen == id), "{id} is no operation");
            for scope in *scopes {
                assert!(
                    atelier_proto::access::SCOPES.contains(scope),
                    "{id}: unknown scope {scope}"
                );
            }
        }
    }
}
