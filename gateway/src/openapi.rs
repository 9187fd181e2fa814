//! The OpenAPI 3.1 document, generated from the handlers, and its Swagger UI.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{archive, auth, images, problem, processing, users, workflows};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Atelier API",
        description = "Run fal.ai models on your images: accounts, uploads, workflows, jobs and live events. \
Errors are RFC 9457 problem documents (`application/problem+json`).",
    ),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::logout_all, auth::me, auth::jwks,
        images::upload, images::upload_body, images::list, images::get, images::delete,
        workflows::list, workflows::get, workflows::parameters, workflows::validate, workflows::estimate,
        processing::start, processing::status, processing::cancel, processing::list, processing::events,
        processing::retry, processing::start_batch, processing::get_batch, processing::cancel_batch, processing::retry_batch,
        archive::job, archive::batch,
        users::profile, users::update_profile, users::settings, users::replace_settings, users::history,
        users::delete_account,
    ),
    components(schemas(problem::Problem, problem::ProblemField, problem::ProblemQuota, users::SettingsBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "images", description = "Your uploaded and result images"),
        (name = "workflows", description = "What can be done to an image, and its parameters"),
        (name = "processing", description = "Jobs: start, watch live, cancel, list"),
        (name = "users", description = "Your profile, settings, history, usage and account"),
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

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
