//! The local stack as a deployment sees it (one test binary): each function's AWS calls against
//! its IAM policy ([`iam`]), request limits ([`limits`]), the stack's own wiring ([`local_stack`])
//! and the HTTP contract with its event catalog ([`openapi`]).

mod iam;
mod limits;
mod local_stack;
mod openapi;
