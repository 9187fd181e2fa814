//! Request extractors whose rejections are problem documents.

use axum::{Json, extract::FromRequest};

use crate::problem::Problem;

/// A JSON body; a body that is not JSON, or not of the expected shape, is answered
/// with a problem naming what is wrong.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(Problem))]
pub struct Body<T>(pub T);
