//! Integration tests against real HTTP servers on 127.0.0.1: a scripted fake of fal
//! for precise failure sequences, result hosts, and a JWKS endpoint.

mod breaker;
mod download;
mod fake;
mod queue;
mod webhook;
