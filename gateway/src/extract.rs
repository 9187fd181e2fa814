//! Request extractors whose rejections are problem documents.

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, request::Parts},
};

use crate::problem::Problem;

/// A JSON object body; a body that is not JSON, not an object, or not of the
/// expected shape, is answered with a problem naming what is wrong. (An object
/// only: serde would also read a struct from an array of its fields.)
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state).await?;
        let invalid =
            |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", detail);
        if !value.is_object() {
            return Err(invalid("the body must be a JSON object".to_owned()));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|err| invalid(format!("the body does not fit: {err}")))
    }
}

/// Query parameters; a query that does not parse (a number that is not one, a
/// parameter given twice) is a `400` problem saying why.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let axum::extract::Query(query) = axum::extract::Query::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request("invalid-query", rejection.body_text()))?;
        Ok(Self(query))
    }
}

/// A `multipart/form-data` body; any other body is a problem saying what was expected.
pub struct Multipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for Multipart {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        axum::extract::Multipart::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| {
                Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    rejection.body_text(),
                )
            })
    }
}
