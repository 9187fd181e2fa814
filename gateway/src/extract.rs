//! Request extractors whose rejections are problem documents.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, request::Parts},
};

use futures::Stream;

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
        let request = request.map(|body| {
            axum::body::Body::from_stream(OneChunkPerPoll::new(body.into_data_stream()))
        });
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

/// Hands on one chunk of a body per poll. The multipart reader takes chunks from
/// its body until the body has none ready, and hands a field's bytes on as one
/// piece: while the upload's consumer is busy, the socket fills, and the next read
/// would take all of it (megabytes) into memory and into one message. Yielding
/// after each chunk bounds what it buffers to a chunk of the HTTP reader (a few
/// hundred KiB), so the client is held back by TCP instead.
struct OneChunkPerPoll<S> {
    inner: S,
    yielded: bool,
}

impl<S> OneChunkPerPoll<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            yielded: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for OneChunkPerPoll<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if std::mem::take(&mut self.yielded) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        self.yielded = matches!(next, Poll::Ready(Some(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body as HttpBody, http::header};
    use bytes::Bytes;

    use super::*;

    /// A form whose whole body is ready at once, as when the socket filled while
    /// the upload's consumer was busy: the file still comes in pieces no larger
    /// than the body's own chunks.
    #[tokio::test]
    async fn a_field_comes_in_chunks_however_much_of_the_body_is_ready() {
        // Under the default body limit of 2 MB.
        const CHUNK: usize = 64 * 1024;
        const CHUNKS: usize = 24;
        let mut parts: Vec<Bytes> = vec![Bytes::from_static(
            b"--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n",
        )];
        parts.extend((0..CHUNKS).map(|_| Bytes::from(vec![7u8; CHUNK])));
        parts.push(Bytes::from_static(b"\r\n--b--\r\n"));
        let body = HttpBody::from_stream(futures::stream::iter(
            parts.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let request = Request::builder()
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=b")
            .body(body)
            .expect("request");
        let Ok(Multipart(mut form)) = Multipart::from_request(request, &()).await else {
            panic!("a multipart form");
        };
        let mut field = form.next_field().await.expect("field").expect("a field");
        let (mut total, mut largest) = (0, 0);
        while let Some(chunk) = field.chunk().await.expect("chunk") {
            total += chunk.len();
            largest = largest.max(chunk.len());
        }
        assert_eq!(total, CHUNK * CHUNKS);
        assert!(
            largest <= 2 * CHUNK,
            "a piece of {largest} bytes: the reader took more than the chunks in hand"
        );
    }
}
