//! The HTTP client against an HTTP fake (wiremock on 127.0.0.1), written from the facts in
//! `docs/waha-contract.md`. One test binary, one module per concern.

mod calls;
mod ensure;
mod errors;
mod proxy;
mod redirects;
mod retries;
mod secrets;
mod support;
