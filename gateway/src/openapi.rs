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
        problem::Problem, problem::ProblemField, problem::ProblemQuota, users::SettingsBody,
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
        (name = "admin", description = "For administrators: the platform's audit log"),
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

/// The answers any operation may give besides its own: a malformed request, a
/// missing or expired token, a rate limit, a service away. Added where the
/// operation does not describe them itself.
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
                    "Not signed in, or the access token expired or was revoked",
                ));
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
/// document names a security requirement. The gateway refuses them without a valid
/// access token before reading anything else of the request.
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
            if operation.as_ref().is_some_and(|operation| {
                operation
                    .security
                    .as_ref()
                    .is_some_and(|requirements| !requirements.is_empty())
            }) {
                secured.entry(path.clone()).or_default().push(method);
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
