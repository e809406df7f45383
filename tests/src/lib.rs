//! End-to-end tests live in `tests/` of this crate: they start the local stack of `tools/dev`
//! (moto + PG sandbox + every function behind the HttpApi routes on 127.0.0.1) and talk to it over
//! HTTP only, as a partner would.
