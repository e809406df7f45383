//! The shape of the code, held by tests (one binary): what varies by PG stays in the `pg` crate
//! ([`pg_registry`]), and the crates depend on each other only the allowed way, with no
//! production function of 60 lines or more ([`layout`]).

mod layout;
mod pg_registry;
